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
        .route(
            "/app/{org}/p/{project}/experiments/{name}",
            get(experiment_link),
        )
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

/// The experiment page an experiment summary links to: the trace list of that experiment.
async fn experiment_link(
    State(s): St,
    Path((_org, project, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let msg = format!("no experiment {name} in project {project}");
    let found = db(&s, move |st| {
        let Some(p) = st.project_by_name(&project)? else {
            return Ok(None);
        };
        let pid = p["id"].as_str().unwrap_or_default().to_string();
        Ok(st.experiments(Some(&pid), Some(&name))?.into_iter().next())
    })
    .await?
    .ok_or_else(|| ApiError::not_found(msg))?;
    let id = found["id"].as_str().unwrap_or_default();
    Ok(Redirect::to(&format!("/?experiment_id={}", encode_path_segment(id))).into_response())
}
