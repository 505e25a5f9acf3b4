//! The axum application: shared state, middleware and every endpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::faults::Faults;
use crate::query;
use crate::rowtext::run_deep;
use crate::store::{IngestError, Ingested, Store};
use crate::util::constant_time_eq;
use crate::viewer;
use crate::{RecordLimits, RecordedRequest};

/// The in-memory request log, bounded by entry count and body bytes (oldest dropped first).
/// `base` is the number of entries dropped or cleared, so a request's sequence number stays
/// valid.
#[derive(Default)]
pub(crate) struct RequestLog {
    base: u64,
    bytes: usize,
    entries: VecDeque<RecordedRequest>,
}

/// State shared by the handlers and the public [`crate::DevServer`] handle.
pub(crate) struct Shared {
    pub store: Store,
    pub url: String,
    pub org_id: String,
    pub org_name: String,
    pub api_keys: Vec<String>,
    pub logs3_payload_max_bytes: Option<u64>,
    pub max_body_bytes: u64,
    pub record: RecordLimits,
    pub local_addr: std::net::SocketAddr,
    pub requests: Mutex<RequestLog>,
    pub faults: Faults,
    pub logs3_rows: AtomicUsize,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, RequestLog> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a request; returns its sequence number, or `None` when recording is off.
    fn push_request(&self, r: RecordedRequest) -> Option<u64> {
        let limits = self.record;
        if limits.max_requests == 0 {
            return None;
        }
        let mut log = self.log();
        let seq = log.base + log.entries.len() as u64;
        log.bytes += r.body.len();
        log.entries.push_back(r);
        while log.entries.len() > limits.max_requests
            || (log.bytes > limits.max_body_bytes && log.entries.len() > 1)
        {
            if let Some(old) = log.entries.pop_front() {
                log.bytes -= old.body.len();
                log.base += 1;
            }
        }
        Some(seq)
    }

    fn set_status(&self, seq: u64, status: u16) {
        let mut log = self.log();
        if seq >= log.base {
            let idx = (seq - log.base) as usize;
            if let Some(r) = log.entries.get_mut(idx) {
                r.status = status;
            }
        }
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.log().entries.iter().cloned().collect()
    }

    pub(crate) fn clear_requests(&self) {
        let mut log = self.log();
        log.base += log.entries.len() as u64;
        log.entries.clear();
        log.bytes = 0;
    }

    fn accepts_key(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        self.api_keys.is_empty()
            || self
                .api_keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes()))
    }
}

pub(crate) type St = State<Arc<Shared>>;

// ------------------------------------------------------------------ errors

/// A JSON error answer: `{"error": message}`.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("database error: {e}"),
        )
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("task failed: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({"error": self.message}))).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub(crate) type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Runs a store operation on the blocking pool.
pub(crate) async fn db<T, F>(s: &Arc<Shared>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, rusqlite::Error> + Send + 'static,
{
    let s = s.clone();
    Ok(tokio::task::spawn_blocking(move || f(&s.store)).await??)
}

/// Parses a JSON object body; an empty body counts as `{}`. The Content-Type is not checked
/// (the Python SDK sends none on `/logs3`).
fn json_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    }
}

fn opt_str(m: &Map<String, Value>, k: &str) -> Option<String> {
    match m.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
pub(crate) fn encode_path_segment(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// A signed upload URL: the key plus the token that authorises it without an API key (the
/// SDKs send only the headers the server gave them to signed URLs).
async fn upload_url(s: &Arc<Shared>, key: &str) -> Result<String, ApiError> {
    let k = key.to_string();
    let token = db(s, move |st| st.upload_grant(&k)).await?;
    Ok(format!(
        "{}/dev/upload/{}?token={token}",
        s.url,
        encode_path_segment(key)
    ))
}

// -------------------------------------------------------------- middleware

/// Name of the cookie the viewer's login form sets (its value is the API key).
const KEY_COOKIE: &str = "braintrust_dev_key";

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The login form: always open.
    Open,
    /// Viewer pages and `/dev/api/*`: open unless API keys are configured; then the key is
    /// needed as a bearer token or the login cookie.
    Viewer,
    /// Signed upload URLs: the URL's token, or an accepted key.
    Upload,
    /// Everything else (the SDK protocol): a bearer key is always required.
    Api,
}

fn access_for(path: &str) -> Access {
    if path == "/dev/login" {
        Access::Open
    } else if path.starts_with("/dev/upload/") {
        Access::Upload
    } else if path == "/"
        || path.starts_with("/trace/")
        || path.starts_with("/app/")
        || path.starts_with("/dev/api/")
    {
        Access::Viewer
    } else {
        Access::Api
    }
}

/// Extracts the bearer token from `Authorization`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes (and `+` as space) of a URL component.
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn unauthorized(has_key: bool) -> Response {
    let msg = if has_key {
        "Invalid API key"
    } else {
        "Missing Authorization header (expected 'Bearer <api key>')"
    };
    ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response()
}

/// Checks access from the request head alone, then reads the body under the size limit, records
/// the request (when recording is on) and passes it on. Nothing of a refused body is read beyond
/// what is already buffered, so unauthenticated or oversized uploads cost no memory.
async fn gate(State(s): St, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let key = bearer(&parts.headers).or_else(|| cookie(&parts.headers, KEY_COOKIE));
    let key_ok = key.is_some_and(|k| s.accepts_key(k));
    let allowed = match access_for(path) {
        Access::Open => true,
        Access::Viewer => s.api_keys.is_empty() || key_ok,
        Access::Api => bearer(&parts.headers).is_some_and(|k| s.accepts_key(k)),
        Access::Upload => {
            key_ok
                // Reading uploads is as open as the viewer that shows them.
                || (s.api_keys.is_empty() && parts.method == axum::http::Method::GET)
                || {
                let upload_key = percent_decode(path.trim_start_matches("/dev/upload/"));
                let token = query_param(parts.uri.query(), "token").unwrap_or_default();
                let st = s.clone();
                tokio::task::spawn_blocking(move || {
                    st.store.upload_token_valid(&upload_key, &token)
                })
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(false)
            }
        }
    };
    let head_record = |status: u16| RecordedRequest {
        method: parts.method.to_string(),
        path: path.to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        status,
    };
    if !allowed {
        let viewer_page = access_for(path) == Access::Viewer
            && parts.method == axum::http::Method::GET
            && !path.starts_with("/dev/api/");
        let resp = if viewer_page {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            Redirect::to(&format!("/dev/login?next={}", encode_path_segment(next))).into_response()
        } else {
            unauthorized(key.is_some())
        };
        s.push_request(head_record(resp.status().as_u16()));
        return resp;
    }
    let mut limit = s.max_body_bytes;
    if access_for(path) == Access::Open {
        // The one body read without a key: a sign-in form.
        limit = limit.min(4096);
    }
    if path == "/logs3" {
        if let Some(max) = s.logs3_payload_max_bytes {
            limit = limit.min(max);
        }
    }
    let too_large = |len: Option<u64>| {
        let what = len.map_or("body".to_string(), |n| format!("body of {n} bytes"));
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request {what} exceeds the limit of {limit} bytes"),
        )
        .into_response()
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        let resp = too_large(declared);
        s.push_request(head_record(413));
        return resp;
    }
    if access_for(path) == Access::Upload && parts.method != axum::http::Method::GET {
        s.faults.upload_gate().await;
    }
    let bytes = match axum::body::to_bytes(body, limit as usize).await {
        Ok(b) => b,
        Err(_) => {
            s.push_request(head_record(413));
            return too_large(None);
        }
    };
    let mut rec = head_record(0);
    rec.body = bytes.to_vec();
    let seq = s.push_request(rec);
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if let Some(seq) = seq {
        s.set_status(seq, resp.status().as_u16());
    }
    resp
}

// ------------------------------------------------------------------ router

/// Builds the application.
pub(crate) fn router(s: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/apikey/login", post(login))
        .route("/v1/project", post(v1_project_create).get(v1_project_list))
        .route("/v1/project/{id}", get(v1_project_get))
        .route("/api/project/register", post(legacy_project_register))
        .route("/api/project", get(legacy_project_get))
        .route(
            "/v1/experiment",
            post(v1_experiment_create).get(v1_experiment_list),
        )
        .route("/v1/experiment/{id}", get(v1_experiment_get))
        .route(
            "/v1/experiment/{id}/summarize",
            get(v1_experiment_summarize),
        )
        .route("/api/experiment/register", post(legacy_experiment_register))
        .route("/api/experiment/get", post(legacy_experiment_get))
        .route("/version", get(version))
        .route("/logs3", post(logs3))
        .route("/logs3/overflow", post(logs3_overflow))
        .route("/otel/v1/traces", post(crate::otlp::traces))
        .route("/attachment", post(attachment_create).get(attachment_get))
        .route("/attachment/status", post(attachment_status))
        .route(
            "/dev/upload/{key}",
            put(upload_put).post(upload_put).get(upload_get),
        )
        .route("/dev/login", get(login_form).post(login_submit))
        .route("/dev/api/requests", get(dev_requests))
        .merge(query::routes())
        .merge(viewer::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(s.clone(), gate))
        .with_state(s)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

// ------------------------------------------------------------------- login

async fn login(State(s): St) -> Json<Value> {
    Json(json!({
        "org_info": [{
            "id": s.org_id,
            "name": s.org_name,
            "api_url": s.url,
            "proxy_url": s.url,
            "realtime_url": null,
            "is_universal_api": true,
            "git_metadata": {"collect": "none"},
        }]
    }))
}

async fn version(State(s): St) -> Json<Value> {
    let mut v = json!({
        "version": format!("braintrust-devserver {}", env!("CARGO_PKG_VERSION")),
        "devserver": true,
    });
    if let Some(max) = s.logs3_payload_max_bytes {
        v["logs3_payload_max_bytes"] = json!(max);
    }
    Json(v)
}

// ---------------------------------------------------------------- projects

async fn v1_project_create(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let name = opt_str(&b, "name").ok_or_else(|| ApiError::bad_request("missing 'name'"))?;
    let org_id = s.org_id.clone();
    Ok(Json(
        db(&s, move |st| st.project_get_or_create(&name, &org_id)).await?,
    ))
}

async fn v1_project_get(State(s): St, Path(id): Path<String>) -> ApiResult {
    let msg = format!("project {id} not found");
    db(&s, move |st| st.project_by_id(&id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(msg))
}

async fn v1_project_list(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let name = q.get("project_name").or_else(|| q.get("name")).cloned();
    let mut projects = db(&s, |st| st.projects()).await?;
    if let Some(n) = name {
        projects.retain(|p| p["name"] == n.as_str());
    }
    Ok(Json(json!({ "objects": projects })))
}

async fn legacy_project_register(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let org_id = s.org_id.clone();
    let project = match (opt_str(&b, "project_name"), opt_str(&b, "project_id")) {
        (None, Some(id)) => {
            let msg = format!("project {id} not found");
            db(&s, move |st| st.project_by_id(&id))
                .await?
                .ok_or_else(|| ApiError::not_found(msg))?
        }
        (name, _) => {
            let name = name.unwrap_or_else(|| "Global".to_string());
            db(&s, move |st| st.project_get_or_create(&name, &org_id)).await?
        }
    };
    Ok(Json(json!({ "project": project })))
}

async fn legacy_project_get(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let found = if let Some(id) = q.get("id").cloned() {
        db(&s, move |st| st.project_by_id(&id)).await?
    } else if let Some(name) = q.get("name").or_else(|| q.get("project_name")).cloned() {
        db(&s, move |st| st.project_by_name(&name)).await?
    } else {
        return Err(ApiError::bad_request("missing 'id' query parameter"));
    };
    found
        .map(Json)
        .ok_or_else(|| ApiError::not_found("project not found"))
}

// ------------------------------------------------------------- experiments

/// Fields of an experiment registration that are not copied into the experiment object.
const EXPERIMENT_CONTROL_FIELDS: &[&str] = &[
    "project_id",
    "project_name",
    "name",
    "experiment_name",
    "ensure_new",
    "update",
    "org_id",
    "org_name",
    "base_experiment",
];

fn experiment_extra(b: &Map<String, Value>) -> Map<String, Value> {
    let mut extra: Map<String, Value> = b
        .iter()
        .filter(|(k, _)| !EXPERIMENT_CONTROL_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    extra.entry("public").or_insert(Value::Bool(false));
    extra
}

async fn v1_experiment_create(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let project_id =
        opt_str(&b, "project_id").ok_or_else(|| ApiError::bad_request("missing 'project_id'"))?;
    let name = opt_str(&b, "name");
    let ensure_new = b
        .get("ensure_new")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let extra = experiment_extra(&b);
    Ok(Json(
        db(&s, move |st| {
            st.experiment_register(&project_id, name.as_deref(), ensure_new, extra)
        })
        .await?,
    ))
}

async fn v1_experiment_get(State(s): St, Path(id): Path<String>) -> ApiResult {
    let msg = format!("experiment {id} not found");
    db(&s, move |st| st.experiment_by_id(&id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(msg))
}

/// The backend's experiment summary: score and metric averages compared with another
/// experiment, plus `totals` (spans, traces, duration and tokens).
async fn v1_experiment_summarize(
    State(s): St,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let msg = format!("experiment {id} not found");
    let comparison = q
        .get("comparison_experiment_id")
        .filter(|v| !v.is_empty())
        .cloned();
    let (url, org) = (s.url.clone(), s.org_name.clone());
    db(&s, move |st| {
        crate::summary::summarize(st, &url, &org, &id, comparison.as_deref())
    })
    .await?
    .map(Json)
    .ok_or_else(|| ApiError::not_found(msg))
}

/// Resolves `project_id` or `project_name` to a project id (None = no project filter).
async fn resolve_project_filter(
    s: &Arc<Shared>,
    project_id: Option<String>,
    project_name: Option<String>,
) -> Result<Option<Option<String>>, ApiError> {
    if let Some(id) = project_id {
        return Ok(Some(Some(id)));
    }
    if let Some(name) = project_name {
        let p = db(s, move |st| st.project_by_name(&name)).await?;
        return Ok(Some(p.and_then(|p| p["id"].as_str().map(str::to_string))));
    }
    Ok(None)
}

async fn find_experiments(
    s: &Arc<Shared>,
    project_id: Option<String>,
    project_name: Option<String>,
    experiment_name: Option<String>,
    experiment_id: Option<String>,
) -> Result<Vec<Value>, ApiError> {
    let project = resolve_project_filter(s, project_id, project_name).await?;
    let pid = match project {
        Some(None) => return Ok(Vec::new()),
        Some(Some(id)) => Some(id),
        None => None,
    };
    let mut found = db(s, move |st| {
        st.experiments(pid.as_deref(), experiment_name.as_deref())
    })
    .await?;
    if let Some(id) = experiment_id {
        found.retain(|e| e["id"] == id.as_str());
    }
    Ok(found)
}

async fn v1_experiment_list(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let found = find_experiments(
        &s,
        q.get("project_id").cloned(),
        q.get("project_name").cloned(),
        q.get("experiment_name").cloned(),
        q.get("ids").or_else(|| q.get("id")).cloned(),
    )
    .await?;
    Ok(Json(json!({ "objects": found })))
}

async fn legacy_experiment_register(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let org_id = s.org_id.clone();
    let project_id = opt_str(&b, "project_id");
    let project_name = opt_str(&b, "project_name");
    let existing = match project_id.clone() {
        Some(id) => db(&s, move |st| st.project_by_id(&id)).await?,
        None => None,
    };
    let project = match existing {
        Some(p) => p,
        None if project_id.is_some() && project_name.is_none() => {
            return Err(ApiError::not_found("project not found"));
        }
        None => {
            let name = project_name.unwrap_or_else(|| "Global".to_string());
            db(&s, move |st| st.project_get_or_create(&name, &org_id)).await?
        }
    };
    let pid = project["id"].as_str().unwrap_or_default().to_string();
    let name = opt_str(&b, "experiment_name").or_else(|| opt_str(&b, "name"));
    let update = b.get("update").and_then(Value::as_bool).unwrap_or(false);
    let extra = experiment_extra(&b);
    let experiment = db(&s, move |st| {
        st.experiment_register(&pid, name.as_deref(), !update, extra)
    })
    .await?;
    Ok(Json(
        json!({ "project": project, "experiment": experiment }),
    ))
}

async fn legacy_experiment_get(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let found = find_experiments(
        &s,
        opt_str(&b, "project_id"),
        opt_str(&b, "project_name"),
        opt_str(&b, "experiment_name"),
        opt_str(&b, "experiment_id"),
    )
    .await?;
    Ok(Json(Value::Array(found)))
}

// ------------------------------------------------------------------- logs3

async fn logs3(State(s): St, body: Bytes) -> Response {
    let plan = s.faults.plan_logs3();
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if let Some((status, retry_after)) = plan.fail {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ApiError {
            status,
            message: format!("injected failure ({})", status.as_u16()),
            retry_after,
        }
        .into_response();
    }
    match logs3_store(&s, body).await {
        Ok(done) => Json(json!({"row_ids": done.row_ids, "xact_id": done.xact_id})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn logs3_store(s: &Arc<Shared>, body: Bytes) -> Result<Ingested, ApiError> {
    let rows = match parse_rows_field(&body)? {
        RowsField::Rows(rows) => rows,
        RowsField::Overflow(key) => {
            let k = key.clone();
            let (_, payload) = db(s, move |st| st.upload_get(&k)).await?.ok_or_else(|| {
                ApiError::bad_request(format!("no overflow upload for key {key}"))
            })?;
            let trimmed = payload.trim_ascii_start();
            if trimmed.starts_with(b"[") {
                serde_json::from_slice::<Vec<Box<RawValue>>>(trimmed).map_err(|e| {
                    ApiError::bad_request(format!("overflow payload is not valid JSON: {e}"))
                })?
            } else {
                match parse_rows_field(&payload)? {
                    RowsField::Rows(rows) => rows,
                    RowsField::Overflow(_) => {
                        return Err(ApiError::bad_request(
                            "overflow payload must contain a 'rows' array",
                        ))
                    }
                }
            }
        }
    };
    let s2 = s.clone();
    let done = run_deep(move || s2.store.ingest(&rows))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .map_err(|e| match e {
            IngestError::BadRequest(m) => ApiError::bad_request(m),
            IngestError::Db(e) => ApiError::from(e),
        })?;
    s.logs3_rows.fetch_add(done.row_ids.len(), Ordering::SeqCst);
    Ok(done)
}

/// The `rows` field of a `/logs3` body.
enum RowsField {
    /// Inline rows, each kept as raw JSON text.
    Rows(Vec<Box<RawValue>>),
    /// A `logs3_overflow` reference: the upload key.
    Overflow(String),
}

#[derive(serde::Deserialize)]
struct Logs3Envelope<'a> {
    #[serde(borrow)]
    rows: Option<&'a RawValue>,
}

/// Parses `{"rows": [...] | {"type":"logs3_overflow","key":..}, ...}` without building a JSON
/// tree for the rows.
fn parse_rows_field(body: &[u8]) -> Result<RowsField, ApiError> {
    let env: Logs3Envelope<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let raw = env
        .rows
        .ok_or_else(|| ApiError::bad_request("missing 'rows'"))?
        .get();
    match raw.as_bytes().first() {
        Some(b'[') => serde_json::from_str::<Vec<Box<RawValue>>>(raw)
            .map(RowsField::Rows)
            .map_err(|e| ApiError::bad_request(format!("invalid 'rows': {e}"))),
        Some(b'{') => {
            let r: Map<String, Value> = serde_json::from_str(raw)
                .map_err(|e| ApiError::bad_request(format!("invalid 'rows': {e}")))?;
            if r.get("type").and_then(Value::as_str) != Some("logs3_overflow") {
                return Err(ApiError::bad_request(
                    "'rows' object must be a logs3_overflow reference",
                ));
            }
            opt_str(&r, "key")
                .map(RowsField::Overflow)
                .ok_or_else(|| ApiError::bad_request("logs3_overflow reference without 'key'"))
        }
        _ => Err(ApiError::bad_request(
            "'rows' must be an array or a logs3_overflow reference",
        )),
    }
}

async fn logs3_overflow(State(s): St, body: Bytes) -> ApiResult {
    let _ = json_object(&body)?;
    let key = format!("logs3-overflow-{}", uuid::Uuid::new_v4());
    Ok(Json(json!({
        "method": "PUT",
        "signedUrl": upload_url(&s, &key).await?,
        "headers": {"content-type": "application/json"},
        "key": key,
    })))
}

// ------------------------------------------------------------- attachments

async fn attachment_create(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let key = opt_str(&b, "key").ok_or_else(|| ApiError::bad_request("missing 'key'"))?;
    let url = upload_url(&s, &key).await?;
    let (filename, ct, org) = (
        opt_str(&b, "filename"),
        opt_str(&b, "content_type"),
        opt_str(&b, "org_id"),
    );
    db(&s, move |st| {
        st.attachment_register(&key, filename.as_deref(), ct.as_deref(), org.as_deref())
    })
    .await?;
    Ok(Json(json!({"signedUrl": url, "headers": {}})))
}

async fn attachment_status(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let key = opt_str(&b, "key").ok_or_else(|| ApiError::bad_request("missing 'key'"))?;
    let status = match b.get("status") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => return Err(ApiError::bad_request("missing 'status' object")),
    };
    let org = opt_str(&b, "org_id");
    db(&s, move |st| {
        st.attachment_set_status(&key, org.as_deref(), &status)
    })
    .await?;
    Ok(Json(json!({"ok": true})))
}

async fn attachment_get(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    if let Some(url) = q.get("url").filter(|u| !u.is_empty()) {
        return Ok(Json(json!({
            "downloadUrl": url,
            "status": {"upload_status": "done"},
        })));
    }
    let key = q
        .get("key")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("missing 'key' query parameter"))?;
    let k = key.clone();
    let (meta, upload_exists) = db(&s, move |st| {
        let meta = st.attachment_get(&k)?;
        let exists = st.upload_get(&k)?.is_some();
        Ok((meta, exists))
    })
    .await?;
    let status = match meta {
        Some((_, status)) => status,
        None if upload_exists => json!({"upload_status": "done"}),
        None => return Err(ApiError::not_found(format!("attachment {key} not found"))),
    };
    Ok(Json(
        json!({"downloadUrl": upload_url(&s, &key).await?, "status": status}),
    ))
}

async fn upload_put(
    State(s): St,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if let Some(status) = s.faults.plan_upload() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(ApiError::new(status, "injected upload failure"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    db(&s, move |st| st.upload_put(&key, ct.as_deref(), &body)).await?;
    Ok(StatusCode::OK)
}

async fn upload_get(State(s): St, Path(key): Path<String>) -> Result<Response, ApiError> {
    let k = key.clone();
    let (upload, meta) = db(&s, move |st| {
        Ok((st.upload_get(&k)?, st.attachment_get(&k)?))
    })
    .await?;
    let (ct, data) = upload.ok_or_else(|| ApiError::not_found(format!("no upload {key}")))?;
    let ct = meta
        .and_then(|(ct, _)| ct)
        .or(ct)
        .unwrap_or_else(|| "application/octet-stream".to_string());
    let mut resp = Response::new(Body::from(data));
    if let Ok(v) = HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

// ------------------------------------------------------------------ login

async fn login_form(Query(q): Query<HashMap<String, String>>) -> Html<String> {
    let next = q.get("next").map(String::as_str).unwrap_or("/");
    let next = html_escape(safe_next(next));
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>braintrust-devserver login</title>\
         </head><body style=\"font-family:sans-serif;margin:3em\"><h1>braintrust-devserver</h1>\
         <p>This server requires its API key.</p><form method=post action=/dev/login>\
         <input type=hidden name=next value=\"{next}\"><input type=password name=key \
         placeholder=\"API key\" autofocus> <button>Sign in</button></form></body></html>"
    ))
}

/// Only same-origin paths are followed after login.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") {
        next
    } else {
        "/"
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn login_submit(State(s): St, body: Bytes) -> Response {
    let form = String::from_utf8_lossy(&body);
    let field = |name: &str| query_param(Some(&form), name).unwrap_or_default();
    let key = field("key");
    if !s.accepts_key(&key) || key.contains(';') {
        return (
            StatusCode::UNAUTHORIZED,
            Html("Invalid API key. <a href=/dev/login>Try again</a>"),
        )
            .into_response();
    }
    let next = field("next");
    let mut resp = Redirect::to(safe_next(&next)).into_response();
    let cookie = format!("{KEY_COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn dev_requests(State(s): St) -> Json<Value> {
    let log = s.log();
    Json(Value::Array(
        log.entries
            .iter()
            .map(|r| {
                json!({
                    "method": r.method,
                    "path": r.path,
                    "query": r.query,
                    "status": r.status,
                    "body_bytes": r.body.len(),
                })
            })
            .collect(),
    ))
}
