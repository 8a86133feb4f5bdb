//! The softphone page (`services/softphone/`), compiled into the binary and
//! served at `/softphone/`: the Open CTI adapter URL of the call center
//! definition. Only the page's own files are served (not its tests).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

static PAGE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../softphone");

/// `/softphone/` and its files.
pub fn router() -> Router {
    Router::new()
        .route("/softphone", get(|| async { Redirect::permanent("/softphone/") }))
        .route("/softphone/", get(|| async { file("index.html") }))
        .route("/softphone/{*path}", get(|Path(path): Path<String>| async move { file(&path) }))
}

/// Whether `path` is part of the page (its tests and notes are not served).
fn served(path: &str) -> bool {
    path == "index.html" || path == "softphone.css" || (path.starts_with("app/") && (path.ends_with(".js") || path.ends_with(".css")))
}

fn file(path: &str) -> Response {
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(f) = PAGE.get_file(path).filter(|_| served(path) && !path.contains("..")) else {
        return (StatusCode::NOT_FOUND, "no such file of the softphone page\n").into_response();
    };
    let kind = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    };
    let mut response = f.contents().to_vec().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // A new gateway version is picked up at the next load.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_modules_are_served_and_nothing_else() {
        assert_eq!(file("index.html").status(), StatusCode::OK);
        assert_eq!(file("").status(), StatusCode::OK);
        let js = file("app/main.js");
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(js.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(file("README.md").status(), StatusCode::NOT_FOUND);
        assert_eq!(file("test/api.test.mjs").status(), StatusCode::NOT_FOUND);
        assert_eq!(file("app/../README.md").status(), StatusCode::NOT_FOUND);
        assert_eq!(file("app/nothing.js").status(), StatusCode::NOT_FOUND);
    }
}
