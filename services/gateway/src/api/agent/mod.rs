//! The agent API under `/v1`: what the softphone (the Open CTI adapter)
//! drives Switchboard with.
//!
//! Shape, from the outside in: CORS (only `auth.allowed_origins` and the
//! gateway's own origin), a body size limit (`http.max_body_bytes`), then —
//! for everything but sign-in and `/openapi.json` — the authentication
//! layer, which turns `Authorization: Bearer <session token>` (or, on the
//! event stream, `?ticket=`) into a [`Principal`] in the request's
//! extensions and applies the per-session rate limit; then the
//! `Idempotency-Key` layer. Handlers take `Extension<Principal>`; a route
//! mounted outside the layer would fail every request with 500 rather than
//! run unauthenticated. Errors are RFC 9457 problems (`api::problem`).
//! The OpenAPI 3.1 document is generated from the handlers' annotations and
//! served at `/openapi.json`.

pub mod calls;
pub mod context;
pub mod idempotency;
pub mod me;
pub mod recordings;
pub mod signin;
pub mod softphone;
pub mod stream;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tracing::Instrument;
use serde::{Deserialize, Serialize};
use switchboard_store::{now_ms, Database};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::auth::salesforce::SalesforceLogin;
use crate::api::auth::seal::Sealer;
use crate::api::auth::{Principal, Role, Sessions};
use crate::api::problem::Problem;
use crate::calls::control::CallControl;
use crate::calls::live::LiveCalls;
use crate::directory::Directory;
use crate::recordings::RecordingSink;
use crate::salesforce::SalesforceContext;
use crate::sip::ratelimit::{RateLimiter, RatePolicy};

/// How long a stream ticket is valid.
const TICKET_TTL: Duration = Duration::from_secs(60);
const TICKET_PURPOSE: &str = "stream-ticket";

/// Everything the agent API's handlers share.
#[derive(Clone)]
pub struct AgentApi {
    pub sessions: Sessions,
    pub login: Option<SalesforceLogin>,
    /// Salesforce read with the agent's own tokens.
    pub salesforce: SalesforceContext,
    pub directory: Directory,
    pub control: CallControl,
    pub live: LiveCalls,
    pub db: Database,
    pub recordings: RecordingSink,
    /// The gateway's public URL, without a trailing slash.
    pub public_url: String,
    pub allowed_origins: Arc<Vec<String>>,
    pub max_body_bytes: usize,
    sealer: Sealer,
    limiter: Arc<Mutex<RateLimiter<String>>>,
    /// Browser phones (WebRTC), when on.
    pub phones: Option<crate::webrtc::BrowserPhones>,
}

impl axum::extract::FromRef<AgentApi> for LiveCalls {
    fn from_ref(api: &AgentApi) -> LiveCalls {
        api.live.clone()
    }
}

/// What a stream ticket carries, sealed.
#[derive(Serialize, Deserialize)]
struct Ticket {
    u: String,
    s: String,
    a: bool,
    sf: bool,
    x: i64,
    /// Ticket expiry.
    e: i64,
}

impl AgentApi {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sessions: Sessions,
        login: Option<SalesforceLogin>,
        salesforce: SalesforceContext,
        directory: Directory,
        control: CallControl,
        live: LiveCalls,
        db: Database,
        recordings: RecordingSink,
        public_url: String,
        allowed_origins: Vec<String>,
        max_body_bytes: usize,
        sealer: Sealer,
        per_minute: u32,
    ) -> AgentApi {
        let policy = RatePolicy { per_second: f64::from(per_minute) / 60.0, burst: f64::from(per_minute.clamp(10, 120)), max_tracked: 100_000 };
        AgentApi {
            sessions,
            login,
            salesforce,
            directory,
            control,
            live,
            db,
            recordings,
            public_url,
            allowed_origins: Arc::new(allowed_origins),
            max_body_bytes,
            sealer,
            limiter: Arc::new(Mutex::new(RateLimiter::new(policy))),
            phones: None,
        }
    }

    /// The same API with browser phones.
    pub fn with_phones(mut self, phones: Option<crate::webrtc::BrowserPhones>) -> AgentApi {
        self.phones = phones;
        self
    }

    /// Whether the browser may be sent to `url` with a session token.
    pub fn may_return_to(&self, url: &str) -> bool {
        let Ok(parsed) = reqwest::Url::parse(url) else { return false };
        let origin = parsed.origin().ascii_serialization();
        let own = reqwest::Url::parse(&self.public_url).map(|u| u.origin().ascii_serialization()).ok();
        own.as_deref() == Some(origin.as_str()) || self.allowed_origins.contains(&origin)
    }

    fn issue_ticket(&self, me: &Principal) -> (String, i64) {
        let expires = now_ms() + TICKET_TTL.as_millis() as i64;
        let t = Ticket { u: me.user_id.clone(), s: me.session_id.clone(), a: me.is_admin(), sf: me.salesforce_connected, x: me.expires_at_ms, e: expires };
        (self.sealer.seal(TICKET_PURPOSE, &serde_json::to_vec(&t).expect("ticket serialises")), expires.min(me.expires_at_ms))
    }

    fn open_ticket(&self, ticket: &str) -> Option<Principal> {
        let plain = self.sealer.open(TICKET_PURPOSE, ticket).ok()?;
        let t: Ticket = serde_json::from_slice(&plain).ok()?;
        let now = now_ms();
        if t.e <= now || t.x <= now {
            return None;
        }
        Some(Principal {
            user_id: t.u,
            session_id: t.s,
            role: if t.a { Role::Admin } else { Role::Agent },
            expires_at_ms: t.x,
            salesforce_connected: t.sf,
        })
    }
}

/// The OpenAPI document's fixed parts; paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard agent API",
        description = "What the Switchboard softphone (the Salesforce Open CTI adapter) drives calls with. \
            Sign in with `GET /v1/auth/salesforce/login`; send the session token as `Authorization: Bearer …`. \
            Errors are RFC 9457 problem details with a stable `code`. POST and PUT accept an `Idempotency-Key` header.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    tags(
        (name = "sign-in", description = "Connect with Salesforce, sign out"),
        (name = "agent", description = "The signed-in agent, its settings, caller IDs and the directory"),
        (name = "calls", description = "The agent's calls and what it can do on them"),
        (name = "recordings", description = "The agent's recordings and voicemails, with playback links"),
        (name = "salesforce", description = "Salesforce context of a call, read with the agent's own Salesforce tokens: caller matches, the related record, Cases and Opportunities"),
        (name = "events", description = "The live event stream"),
    ),
    components(schemas(Problem, crate::calls::live::AgentEvent))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("sbs_…").description(Some("The session token from sign-in")).build()),
        );
        components.add_security_scheme("ticket", SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description("ticket", "From POST /v1/stream-tickets; for EventSource and WebSocket, which cannot send headers"))));
    }
}

/// The routes that need no session (sign-in), and those that do.
fn documented() -> (OpenApiRouter<AgentApi>, OpenApiRouter<AgentApi>) {
    let public = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(signin::login))
        .routes(routes!(signin::callback))
        .routes(routes!(recordings::audio));
    let private = OpenApiRouter::new()
        .routes(routes!(signin::logout))
        .routes(routes!(me::me))
        .routes(routes!(me::get_settings, me::put_settings))
        .routes(routes!(me::caller_ids))
        .routes(routes!(me::directory))
        .routes(routes!(me::stream_ticket))
        .routes(routes!(calls::list, calls::place))
        .routes(routes!(calls::get))
        .routes(routes!(calls::answer))
        .routes(routes!(calls::hold))
        .routes(routes!(calls::mute))
        .routes(routes!(calls::dtmf))
        .routes(routes!(calls::recording))
        .routes(routes!(calls::hangup))
        .routes(routes!(calls::decline))
        .routes(routes!(calls::screen))
        .routes(routes!(calls::pick_up))
        .routes(routes!(calls::move_call))
        .routes(routes!(calls::transfer))
        .routes(routes!(calls::cancel_transfer))
        .routes(routes!(calls::complete_transfer))
        .routes(routes!(calls::park))
        .routes(routes!(calls::list_parked))
        .routes(routes!(calls::retrieve))
        .routes(routes!(calls::rate))
        .routes(routes!(calls::add_note))
        .routes(routes!(context::matches))
        .routes(routes!(context::relate))
        .routes(routes!(context::assign))
        .routes(routes!(context::cases))
        .routes(routes!(context::opportunities))
        .routes(routes!(recordings::list))
        .routes(routes!(stream::sse))
        .routes(routes!(stream::websocket))
        .routes(routes!(softphone::register))
        .routes(routes!(softphone::unregister))
        .routes(routes!(softphone::answer_leg))
        .routes(routes!(softphone::decline_leg))
        .routes(routes!(softphone::reoffer_leg));
    (public, private)
}

/// The OpenAPI 3.1 document of the agent API, generated from the routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (public, private) = documented();
    let (_, mut doc) = public.split_for_parts();
    doc.merge(private.split_for_parts().1);
    doc
}

/// The agent API, ready to merge into the gateway's HTTP app.
pub fn router(api: AgentApi) -> Router {
    let (public, private) = documented();
    let (public, mut doc) = public.split_for_parts();
    let (private, private_doc) = private.split_for_parts();
    doc.merge(private_doc);
    let private = private
        .layer(middleware::from_fn_with_state(api.clone(), idempotency::layer))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate));
    let doc = Arc::new(doc);
    let cors = cors(&api);
    public
        .merge(private)
        .route("/openapi.json", axum::routing::get(move || std::future::ready(axum::Json(doc.as_ref().clone()))))
        .with_state(api.clone())
        .layer(axum::extract::DefaultBodyLimit::max(api.max_body_bytes))
        .layer(cors)
}

fn cors(api: &AgentApi) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let mut origins: Vec<HeaderValue> = api.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if let Some(own) = reqwest::Url::parse(&api.public_url).ok().and_then(|u| HeaderValue::from_str(&u.origin().ascii_serialization()).ok()) {
        origins.push(own);
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static(idempotency::HEADER)])
        .expose_headers([header::RETRY_AFTER, header::HeaderName::from_static("idempotent-replayed")])
        .max_age(Duration::from_secs(600))
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn ticket(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "ticket").map(|(_, v)| v.into_owned())
}

fn unauthorized(detail: &str) -> Response {
    let mut r = Problem::unauthorized(detail).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"switchboard\""));
    r
}

/// The authentication layer: session token (or stream ticket) → Principal,
/// then the session's rate limit.
async fn authenticate(State(api): State<AgentApi>, mut request: Request, next: Next) -> Response {
    let principal = if let Some(token) = bearer(&request) {
        match api.sessions.authenticate(token).await {
            Ok(Some(s)) => Some(Principal {
                salesforce_connected: s.salesforce.is_some(),
                user_id: s.user_id,
                session_id: s.id,
                role: s.role,
                expires_at_ms: s.expires_at_ms,
            }),
            Ok(None) => None,
            Err(e) => return Problem::internal("checking the session failed", &e).into_response(),
        }
    } else if request.uri().path().starts_with("/v1/events") {
        ticket(&request).and_then(|t| api.open_ticket(&t))
    } else {
        None
    };
    let Some(principal) = principal else {
        metrics::counter!("switchboard_api_auth_failures_total").increment(1);
        return unauthorized("a valid session token is needed: sign in with Connect with Salesforce and send it as Authorization: Bearer <token>");
    };
    let allowed = api.limiter.lock().map(|mut l| l.allow(principal.session_id.clone(), Instant::now())).unwrap_or(true);
    if !allowed {
        metrics::counter!("switchboard_api_rate_limited_total").increment(1);
        return Problem::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests from this session; slow down (auth.rate_limit_per_minute)")
            .with_retry_after(1)
            .into_response();
    }
    let span = tracing::info_span!("agent_api", user_id = %principal.user_id);
    request.extensions_mut().insert(principal);
    next.run(request).instrument(span).await
}

/// Deletes ended sessions and old idempotency keys, hourly.
pub async fn housekeeping(api: AgentApi, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match api.sessions.purge().await {
            Ok(n) if n > 0 => tracing::debug!(sessions = n, "ended sessions deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "deleting ended sessions failed"),
        }
        let cutoff = now_ms() - idempotency::KEEP_MS;
        if let Err(e) = switchboard_store::sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(cutoff).execute(api.db.pool()).await {
            tracing::warn!(error = %e, "deleting old idempotency keys failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The schema a `$ref` names, from the document's components.
    fn component<'a>(doc: &'a Value, reference: &str) -> &'a Value {
        let name = reference.trim_start_matches("#/components/schemas/");
        &doc["components"]["schemas"][name]
    }

    #[test]
    fn every_request_body_of_the_document_has_an_example() {
        let doc = serde_json::to_value(super::openapi()).expect("the document serialises");
        let (mut missing, mut bodies) = (Vec::new(), 0);
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operations") {
                let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") else { continue };
                bodies += 1;
                let schema = schema.get("$ref").and_then(Value::as_str).map_or(schema, |r| component(&doc, r));
                if schema.get("example").is_none() && schema.get("examples").is_none() {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        assert!(bodies >= 5, "only {bodies} request bodies found; is the pointer right?");
        assert!(missing.is_empty(), "request bodies without an example: {missing:?}");
    }
}
