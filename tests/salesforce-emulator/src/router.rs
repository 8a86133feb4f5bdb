//! The emulator's URL space: OAuth and UserInfo at `/services/oauth2/`,
//! identity URLs and the ID token keys at `/id/`, OpenID Connect discovery at
//! `/.well-known/`, the REST API at `/services/data/` behind the
//! session gate, test control at `/__emulator/`.

use std::sync::Arc;

use axum::middleware;
use axum::routing::{get, patch, post};
use axum::Router;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::state::Shared;
use crate::{
    authorize, collections, control, id_token, identity, oauth, query, rest, search, session,
};

/// Builds the router of one org.
pub(crate) fn build(shared: Arc<Shared>) -> Router {
    // Route parameters at the same place must share a name, hence `{id}`
    // also for the external-id field segment.
    let data = Router::new()
        .route("/", get(rest::versions))
        .route("/{version}", get(rest::resources))
        .route("/{version}/", get(rest::resources))
        .route("/{version}/limits", get(rest::limits))
        .route("/{version}/sobjects", get(rest::sobjects))
        .route(
            "/{version}/sobjects/{sobject}",
            get(rest::object_info).post(rest::create),
        )
        .route(
            "/{version}/sobjects/{sobject}/{id}",
            get(rest::read).patch(rest::update).delete(rest::delete),
        )
        .route(
            "/{version}/sobjects/{sobject}/{id}/{value}",
            get(rest::read_by_external_id).patch(rest::upsert),
        )
        .route(
            "/{version}/composite/sobjects",
            post(collections::create).patch(collections::update),
        )
        .route(
            "/{version}/composite/sobjects/{sobject}/{field}",
            patch(collections::upsert),
        )
        .route("/{version}/query", get(query::query))
        .route("/{version}/query/", get(query::query))
        .route("/{version}/search", get(search::search))
        .route("/{version}/search/", get(search::search))
        .fallback(rest::no_resource)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            session::gate,
        ));
    Router::new()
        .route(
            "/services/oauth2/authorize",
            get(authorize::authorize).post(authorize::authorize),
        )
        .route("/services/oauth2/token", post(oauth::token))
        .route(
            "/services/oauth2/userinfo",
            get(identity::userinfo).post(identity::userinfo),
        )
        .route("/id/{org}/{user}", get(identity::identity))
        .route("/id/keys", get(id_token::keys))
        .route(
            "/.well-known/openid-configuration",
            get(id_token::discovery),
        )
        .route(
            "/services/oauth2/revoke",
            post(oauth::revoke).get(oauth::revoke),
        )
        // The nested router does not see the bare `/services/data/`.
        .route("/services/data/", get(rest::versions))
        .nest("/services/data", data)
        .merge(control::routes())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(shared)
}
