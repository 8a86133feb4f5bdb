//! Recording playback: `GET /v1/recordings/{id}` streams a recording from
//! object storage. Admin token only until agent sessions exist.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use object_store::ObjectStore;
use switchboard_store::{sqlx, Database};

use super::admin::AdminAuthLayer;

#[derive(Clone)]
struct Ctx {
    db: Database,
    store: Arc<dyn ObjectStore>,
}

/// Routes under `/v1/recordings`.
pub fn router(db: Database, store: Arc<dyn ObjectStore>, admin_token: Option<String>) -> Router {
    Router::new()
        .route("/v1/recordings/{id}", get(fetch))
        .with_state(Ctx { db, store })
        .layer(AdminAuthLayer::new(admin_token))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

async fn fetch(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    let row: Option<(String, String)> = match sqlx::query_as("SELECT object_key, format FROM recordings WHERE id = $1")
        .bind(&id)
        .fetch_optional(ctx.db.pool())
        .await
    {
        Ok(k) => k,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", &e.to_string()),
    };
    let Some((key, format)) = row else {
        return error(StatusCode::NOT_FOUND, "not_found", "no recording with this id");
    };
    stream_object(ctx.store.as_ref(), &key, &format).await
}

/// Streams a stored recording with its MIME type and length.
pub async fn stream_object(store: &dyn ObjectStore, key: &str, format: &str) -> Response {
    match store.get(&object_store::path::Path::from(key)).await {
        Ok(obj) => {
            let size = obj.meta.size;
            let stream = obj.into_stream();
            Response::builder()
                .header(header::CONTENT_TYPE, content_type(format))
                .header(header::CONTENT_LENGTH, size.to_string())
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "response"))
        }
        Err(object_store::Error::NotFound { .. }) => {
            error(StatusCode::NOT_FOUND, "object_missing", "the recording is registered but its object is missing from storage")
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "object_store_unavailable", &e.to_string()),
    }
}


/// The MIME type of a recording's stored format (`wav/pcm_s16le`,
/// `ogg/opus`, `mp3`).
pub fn content_type(format: &str) -> &'static str {
    match format.split('/').next().unwrap_or_default() {
        "ogg" => "audio/ogg; codecs=opus",
        "mp3" => "audio/mpeg",
        _ => "audio/wav",
    }
}
