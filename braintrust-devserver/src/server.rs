//! The axum application: shared state, middleware and every endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::faults::Faults;
use crate::render;
use crate::store::{IngestError, RowFilter, Store};
use crate::RecordedRequest;

const VIEWER_HTML: &str = include_str!("viewer.html");

/// The in-memory request log. `base` is the number of entries removed by `clear`, so that a
/// request's sequence number stays valid across clears.
#[derive(Default)]
pub(crate) struct RequestLog {
    base: u64,
    entries: Vec<RecordedRequest>,
}

/// State shared by the handlers and the public [`crate::DevServer`] handle.
pub(crate) struct Shared {
    pub store: Store,
    pub url: String,
    pub org_id: String,
    pub org_name: String,
    pub api_keys: Vec<String>,
    pub logs3_payload_max_bytes: Option<u64>,
    pub requests: Mutex<RequestLog>,
    pub faults: Faults,
    pub logs3_rows: AtomicUsize,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, RequestLog> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_request(&self, r: RecordedRequest) -> u64 {
        let mut log = self.log();
        let seq = log.base + log.entries.len() as u64;
        log.entries.push(r);
        seq
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
        self.log().entries.clone()
    }

    pub(crate) fn clear_requests(&self) {
        let mut log = self.log();
        log.base += log.entries.len() as u64;
        log.entries.clear();
    }

    fn accepts_key(&self, key: &str) -> bool {
        if key.is_empty() {
            return false;
        }
        self.api_keys.is_empty() || self.api_keys.iter().any(|k| k == key)
    }
}

type St = State<Arc<Shared>>;

// ------------------------------------------------------------------ errors

/// A JSON error answer: `{"error": message}`.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
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

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Runs a store operation on the blocking pool.
async fn db<T, F>(s: &Arc<Shared>, f: F) -> Result<T, ApiError>
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
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn upload_url(s: &Shared, key: &str) -> String {
    format!("{}/dev/upload/{}", s.url, encode_path_segment(key))
}

// -------------------------------------------------------------- middleware

/// Records every request (arrival order) and, once answered, its status.
async fn record(State(s): St, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("failed to read body: {e}")).into_response()
        }
    };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let seq = s.push_request(RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: bytes.to_vec(),
        status: 0,
    });
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    s.set_status(seq, resp.status().as_u16());
    resp
}

/// Extracts the bearer token from `Authorization`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Rejects requests without an accepted bearer key (401, JSON error body).
async fn require_auth(State(s): St, req: Request, next: Next) -> Response {
    match bearer(req.headers()) {
        Some(k) if s.accepts_key(k) => next.run(req).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing Authorization header (expected 'Bearer <api key>')",
        )
        .into_response(),
    }
}

// ------------------------------------------------------------------ router

/// Builds the application.
pub(crate) fn router(s: Arc<Shared>) -> Router {
    let authed = Router::new()
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
        .route("/api/experiment/register", post(legacy_experiment_register))
        .route("/api/experiment/get", post(legacy_experiment_get))
        .route("/version", get(version))
        .route("/logs3", post(logs3))
        .route("/logs3/overflow", post(logs3_overflow))
        .route("/otel/v1/traces", post(crate::otlp::traces))
        .route("/attachment", post(attachment_create).get(attachment_get))
        .route("/attachment/status", post(attachment_status))
        .route_layer(middleware::from_fn_with_state(s.clone(), require_auth));
    let open = Router::new()
        .route("/", get(viewer))
        .route(
            "/dev/upload/{key}",
            put(upload_put).post(upload_put).get(upload_get),
        )
        .route("/dev/api/rows", get(dev_rows))
        .route("/dev/api/traces", get(dev_traces))
        .route("/dev/api/trace/{root_span_id}", get(dev_trace_text))
        .route("/dev/api/projects", get(dev_projects))
        .route("/dev/api/experiments", get(dev_experiments))
        .route("/dev/api/requests", get(dev_requests));
    Router::new()
        .merge(authed)
        .merge(open)
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(s.clone(), record))
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
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn logs3_store(s: &Arc<Shared>, body: Bytes) -> Result<(), ApiError> {
    if let Some(max) = s.logs3_payload_max_bytes {
        if body.len() as u64 > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "payload of {} bytes exceeds logs3_payload_max_bytes ({max})",
                    body.len()
                ),
            ));
        }
    }
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
    let n = tokio::task::spawn_blocking(move || s2.store.ingest(&rows))
        .await?
        .map_err(|e| match e {
            IngestError::BadRequest(m) => ApiError::bad_request(m),
            IngestError::Db(e) => ApiError::from(e),
        })?;
    s.logs3_rows.fetch_add(n, Ordering::SeqCst);
    Ok(())
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
        "signedUrl": upload_url(&s, &key),
        "headers": {"content-type": "application/json"},
        "key": key,
    })))
}

// ------------------------------------------------------------- attachments

async fn attachment_create(State(s): St, body: Bytes) -> ApiResult {
    let b = json_object(&body)?;
    let key = opt_str(&b, "key").ok_or_else(|| ApiError::bad_request("missing 'key'"))?;
    let url = upload_url(&s, &key);
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
        json!({"downloadUrl": upload_url(&s, &key), "status": status}),
    ))
}

async fn upload_put(
    State(s): St,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
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

// ------------------------------------------------------------------ viewer

async fn viewer() -> Html<&'static str> {
    Html(VIEWER_HTML)
}

fn row_filter(q: &HashMap<String, String>) -> RowFilter {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    RowFilter {
        project_id: get("project_id"),
        experiment_id: get("experiment_id"),
        root_span_id: get("root_span_id"),
        log_id: get("log_id"),
    }
}

async fn dev_rows(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let f = row_filter(&q);
    Ok(Json(Value::Array(db(&s, move |st| st.rows(&f)).await?)))
}

async fn dev_traces(State(s): St, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let f = row_filter(&q);
    let roots = db(&s, move |st| st.roots(&f)).await?;
    Ok(Json(Value::Array(
        roots
            .iter()
            .map(|(r, n)| render::trace_summary(r, *n))
            .collect(),
    )))
}

async fn dev_trace_text(State(s): St, Path(root): Path<String>) -> Result<String, ApiError> {
    let f = RowFilter {
        root_span_id: Some(root),
        ..RowFilter::default()
    };
    let rows = db(&s, move |st| st.rows(&f)).await?;
    Ok(render::render_trace(&rows))
}

async fn dev_projects(State(s): St) -> ApiResult {
    Ok(Json(Value::Array(db(&s, |st| st.projects()).await?)))
}

async fn dev_experiments(State(s): St) -> ApiResult {
    Ok(Json(Value::Array(
        db(&s, |st| st.experiments(None, None)).await?,
    )))
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
