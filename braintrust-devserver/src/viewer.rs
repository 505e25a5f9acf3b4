//! The web viewer: one embedded HTML page (no external assets) for the trace list and trace
//! pages, and redirects that make the SDK's `permalink()`/`link()` URLs open those pages.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::server::{db, encode_path_segment, ApiError, Shared, St};

const VIEWER_HTML: &str = include_str!("viewer.html");

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(page))
        .route("/trace/{root_span_id}", get(page))
        .route("/app/{org}/object", get(object_link))
        .route("/app/{org}/p/{project}/logs", get(logs_link))
}

async fn page() -> Html<&'static str> {
    Html(VIEWER_HTML)
}

/// The trace page of the span stored under row `id`.
async fn span_page(s: &Arc<Shared>, id: String) -> Result<Response, ApiError> {
    let msg = format!("no span with row id {id}");
    let (root, span) = db(s, move |st| st.span_location(&id))
        .await?
        .ok_or_else(|| ApiError::not_found(msg))?;
    let root = root.ok_or_else(|| ApiError::not_found("the row is not part of a trace"))?;
    let mut url = format!("/trace/{}", encode_path_segment(&root));
    if let Some(span) = span {
        url.push_str(&format!("?span={}", encode_path_segment(&span)));
    }
    Ok(Redirect::to(&url).into_response())
}

/// `permalink()`: `/app/<org>/object?object_type=…&object_id=…&id=<row id>`.
async fn object_link(
    State(s): St,
    Path(_org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    match q.get("id").filter(|v| !v.is_empty()) {
        Some(id) => span_page(&s, id.clone()).await,
        None => Ok(Redirect::to("/").into_response()),
    }
}

/// `link()` before the project id is known: `/app/<org>/p/<project>/logs?oid=<row id>`.
async fn logs_link(
    State(s): St,
    Path((_org, _project)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    match q.get("oid").filter(|v| !v.is_empty()) {
        Some(id) => span_page(&s, id.clone()).await,
        None => Ok(Redirect::to("/").into_response()),
    }
}
