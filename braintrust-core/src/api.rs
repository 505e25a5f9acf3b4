//! The control plane: login (`/api/apikey/login`), project and experiment
//! registration (`/v1/project`, `/v1/experiment`), `/version`, and the HTTP
//! client every request of a backend goes through. Each call here is one
//! attempt; retrying is the pipeline's job (one retry policy, one place).

use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

use crate::config::{mask_key, redact_url, Config};
use crate::logger::{ObjectInner, ObjectSpec, Resolved};
use crate::Error;

/// What login returned (spec §2.2). `Debug` redacts credentials in URLs.
#[derive(Clone)]
pub struct LoginInfo {
    /// Organization id.
    pub org_id: String,
    /// Organization name.
    pub org_name: String,
    /// Data-plane URL used for `/logs3`.
    pub api_url: String,
    /// Control-plane URL.
    pub app_url: String,
    /// Proxy URL, if any.
    pub proxy_url: Option<String>,
}

impl std::fmt::Debug for LoginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginInfo")
            .field("org_id", &self.org_id)
            .field("org_name", &self.org_name)
            .field("api_url", &redact_url(&self.api_url))
            .field("app_url", &redact_url(&self.app_url))
            .field("proxy_url", &self.proxy_url.as_deref().map(redact_url))
            .finish()
    }
}

/// One backend's API client: configuration, HTTP client and login.
pub(crate) struct Api {
    pub(crate) config: Arc<Config>,
    http: OnceLock<Result<reqwest::Client, String>>,
    login: RwLock<Option<LoginInfo>>,
    login_lock: tokio::sync::Mutex<()>,
}

impl Api {
    pub(crate) fn new(config: Arc<Config>) -> Api {
        Api {
            config,
            http: OnceLock::new(),
            login: RwLock::new(None),
            login_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The login result, once known.
    pub(crate) fn login_info(&self) -> Option<LoginInfo> {
        self.login.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the login so the next request logs in again.
    pub(crate) fn reset_login(&self) {
        *self.login.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn http(&self) -> Result<reqwest::Client, Error> {
        self.http
            .get_or_init(|| build_client(&self.config))
            .clone()
            .map_err(|m| Error::Config {
                field: "http",
                rule: m,
            })
    }

    /// The `authorization` value for a request to `url` (warns once if
    /// that would send the key in clear).
    fn bearer(&self, url: &str) -> Result<String, Error> {
        match &self.config.api_key {
            Some(k) => {
                crate::config::warn_if_plain_http(url);
                Ok(format!("Bearer {k}"))
            }
            None => Err(Error::NoApiKey),
        }
    }

    /// Logs in (once; concurrent callers wait for the same login).
    pub(crate) async fn ensure_login(&self) -> Result<LoginInfo, Error> {
        if let Some(l) = self.login_info() {
            return Ok(l);
        }
        let _g = self.login_lock.lock().await;
        if let Some(l) = self.login_info() {
            return Ok(l);
        }
        let info = self.do_login().await?;
        *self.login.write().unwrap_or_else(|e| e.into_inner()) = Some(info.clone());
        Ok(info)
    }

    async fn do_login(&self) -> Result<LoginInfo, Error> {
        let cfg = &self.config;
        let key = cfg.api_key.clone().ok_or(Error::NoApiKey)?;
        if key == "___TEST_API_KEY__" {
            return Ok(LoginInfo {
                org_id: "test-org-id".into(),
                org_name: "test-org-name".into(),
                api_url: cfg
                    .api_url
                    .clone()
                    .unwrap_or_else(|| "https://api.braintrust.ai".into()),
                app_url: cfg.app_url.clone(),
                proxy_url: None,
            });
        }
        let http = self.http()?;
        let url = join_url(&cfg.app_url, "api/apikey/login");
        let shown = redact_url(&url);
        // One attempt: the logger thread retries the whole resolution with
        // the configured backoff, so retrying here too would multiply waits.
        let resp = http
            .post(&url)
            .header("authorization", self.bearer(&url)?)
            .header("content-length", "0")
            .send()
            .await;
        let resp = resp.map_err(|e| Error::Http {
            context: format!("POST {shown}"),
            message: describe_reqwest(&e),
            status: None,
        })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => {}
            401 | 403 => {
                return Err(Error::InvalidApiKey {
                    masked_key: mask_key(&key),
                    status: status.as_u16(),
                    // A server that echoes the key must not put it in our error.
                    body: truncate(&cfg.redact_key(&body), 500),
                })
            }
            404 => {
                return Err(Error::Config {
                    field: "app_url",
                    rule: format!(
                        "POST {shown} answered 404: no Braintrust login endpoint there; check BRAINTRUST_APP_URL"
                    ),
                })
            }
            code => {
                return Err(Error::Http {
                    context: format!("POST {shown}"),
                    message: format!("[{code}] {}", truncate(&cfg.redact_key(&body), 300)),
                    status: Some(code),
                })
            }
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| Error::Http {
            context: format!("POST {shown}"),
            message: format!("login response is not JSON: {e}"),
            status: Some(status.as_u16()),
        })?;
        parse_login(&v, cfg)
    }

    /// Resolves (registers) a container and returns its ids.
    pub(crate) async fn resolve(&self, object: &Arc<ObjectInner>) -> Result<Resolved, Error> {
        if let Some(r) = object.resolved.get() {
            return Ok(r.clone());
        }
        let _g = object.resolve_lock.lock().await;
        if let Some(r) = object.resolved.get() {
            return Ok(r.clone());
        }
        let login = self.ensure_login().await?;
        let resolved = match &object.spec {
            ObjectSpec::Known { id } => Resolved { id: id.clone() },
            ObjectSpec::Project { name, id } => {
                let p = self
                    .register_project(&login, name.as_deref(), id.as_deref())
                    .await?;
                Resolved { id: p.0.clone() }
            }
            ObjectSpec::Experiment {
                project_name,
                project_id,
                options,
            } => {
                let (pid, _) = self
                    .register_project(&login, project_name.as_deref(), project_id.as_deref())
                    .await?;
                let mut body = serde_json::Map::new();
                body.insert("project_id".into(), Value::String(pid.clone()));
                body.insert("ensure_new".into(), Value::Bool(!options.update));
                if let Some(n) = &options.name {
                    body.insert("name".into(), Value::String(n.clone()));
                }
                if let Some(d) = &options.description {
                    body.insert("description".into(), Value::String(d.clone()));
                }
                if let Some(b) = &options.base_experiment_id {
                    body.insert("base_exp_id".into(), Value::String(b.clone()));
                }
                body.insert("public".into(), Value::Bool(options.public));
                if let Some(m) = &options.metadata {
                    body.insert("metadata".into(), Value::Object(m.clone()));
                }
                if let Some(t) = &options.tags {
                    body.insert("tags".into(), serde_json::json!(t));
                }
                let v = self
                    .api_json(
                        &login,
                        reqwest::Method::POST,
                        "v1/experiment",
                        Some(Value::Object(body)),
                    )
                    .await?;
                let id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Http {
                        context: "POST /v1/experiment".into(),
                        message: "response has no id".into(),
                        status: Some(200),
                    })?;
                Resolved { id: id.to_string() }
            }
        };
        let _ = object.resolved.set(resolved.clone());
        Ok(resolved)
    }

    async fn register_project(
        &self,
        login: &LoginInfo,
        name: Option<&str>,
        id: Option<&str>,
    ) -> Result<(String, String), Error> {
        match (name, id) {
            (Some(n), Some(i)) => Ok((i.to_string(), n.to_string())),
            (None, Some(i)) => {
                let v = self
                    .api_json(
                        login,
                        reqwest::Method::GET,
                        &format!("v1/project/{i}"),
                        None,
                    )
                    .await?;
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                Ok((i.to_string(), name.to_string()))
            }
            (n, None) => {
                let n = n.unwrap_or("Global");
                let body = serde_json::json!({"name": n, "org_name": login.org_name});
                let v = self
                    .api_json(login, reqwest::Method::POST, "v1/project", Some(body))
                    .await?;
                let id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::Http {
                        context: "POST /v1/project".into(),
                        message: "response has no id".into(),
                        status: Some(200),
                    })?;
                Ok((id.to_string(), n.to_string()))
            }
        }
    }

    /// An authenticated JSON call on the API URL.
    pub(crate) async fn api_json(
        &self,
        login: &LoginInfo,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let http = self.http()?;
        let url = join_url(&login.api_url, path);
        let mut req = http
            .request(method.clone(), &url)
            .header("authorization", self.bearer(&url)?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let context = format!("{method} {}", redact_url(&url));
        let resp = req.send().await.map_err(|e| Error::Http {
            context: context.clone(),
            message: describe_reqwest(&e),
            status: None,
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(Error::Http {
                context,
                message: format!(
                    "[{}] {}",
                    status.as_u16(),
                    truncate(&self.config.redact_key(&text), 500)
                ),
                status: Some(status.as_u16()),
            });
        }
        serde_json::from_str(&text).map_err(|e| Error::Http {
            context,
            message: format!("response is not JSON: {e}"),
            status: Some(status.as_u16()),
        })
    }
}

fn parse_login(v: &Value, cfg: &Config) -> Result<LoginInfo, Error> {
    let orgs: Vec<&serde_json::Map<String, Value>> = v
        .get("org_info")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Organization("login response has no org_info array".into()))?
        .iter()
        .filter_map(Value::as_object)
        .filter(|o| {
            o.get("id").is_some_and(Value::is_string) && o.get("name").is_some_and(Value::is_string)
        })
        .collect();
    if orgs.is_empty() {
        return Err(Error::Organization(
            "This user is not part of any organizations.".into(),
        ));
    }
    let org = match &cfg.org_name {
        Some(name) => orgs
            .iter()
            .find(|o| o.get("name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| {
                let names: Vec<&str> = orgs
                    .iter()
                    .filter_map(|o| o.get("name").and_then(Value::as_str))
                    .collect();
                Error::Organization(format!(
                    "Organization {name} not found. Must be one of {}",
                    names.join(", ")
                ))
            })?,
        None => &orgs[0],
    };
    let s = |k: &str| org.get(k).and_then(Value::as_str).map(str::to_string);
    let org_name = s("name").unwrap_or_default();
    let api_url = cfg.api_url.clone().or_else(|| s("api_url")).ok_or_else(|| {
        Error::Organization(match &cfg.org_name {
            Some(n) => format!(
                "Unable to log into organization '{n}'. Are you sure this credential is scoped to the organization?"
            ),
            None => "Unable to log into any organization with the provided credential.".into(),
        })
    })?;
    Ok(LoginInfo {
        org_id: s("id").unwrap_or_default(),
        org_name,
        api_url,
        app_url: cfg.app_url.clone(),
        proxy_url: s("proxy_url"),
    })
}

pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn build_client(cfg: &Config) -> Result<reqwest::Client, String> {
    let h = &cfg.http;
    if let Some(c) = &h.client {
        return Ok(c.clone());
    }
    let mut ua = format!("braintrust-rust/{}", env!("CARGO_PKG_VERSION"));
    if let Some(s) = &h.user_agent_suffix {
        ua.push(' ');
        ua.push_str(s);
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &h.default_headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("default header name {k:?}: {e}"))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|e| format!("default header {k:?} value: {e}"))?;
        headers.append(name, value);
    }
    let mut b = reqwest::Client::builder()
        .user_agent(ua)
        .default_headers(headers)
        .timeout(cfg.effective_timeout())
        .tcp_nodelay(true)
        .use_rustls_tls();
    if let Some(ct) = h.connect_timeout {
        b = b.connect_timeout(ct);
    }
    if let Some(p) = &h.proxy {
        b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("proxy: {e}"))?);
    }
    for pem in &h.root_certificates_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("root certificate: {e}"))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(pem) = &h.identity_pem {
        b = b.identity(reqwest::Identity::from_pem(pem).map_err(|e| format!("identity: {e}"))?);
    }
    b.build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// A transport error described without the URL's query or any header, in
/// one line (it goes into one-line stderr warnings): its kind and immediate
/// cause. Errors logged to spans or returned use `error_string`'s chain.
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "bad response body"
    } else {
        "request failed"
    };
    let mut s = kind.to_string();
    if let Some(inner) = std::error::Error::source(e) {
        s.push_str(&format!(": {inner}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn login_picks_the_named_org_and_env_api_url() {
        let v = json!({"org_info": [
            {"id": "1", "name": "a", "api_url": "http://a"},
            "junk",
            {"id": "2", "name": "b", "api_url": "http://b"}
        ]});
        let l = parse_login(&v, &Config::default()).unwrap();
        assert_eq!((l.org_id.as_str(), l.api_url.as_str()), ("1", "http://a"));
        let l = parse_login(&v, &Config::default().org_name("b")).unwrap();
        assert_eq!(l.api_url, "http://b");
        let l = parse_login(
            &v,
            &Config::default().org_name("b").api_url("http://override"),
        )
        .unwrap();
        assert_eq!(l.api_url, "http://override");
        let e = parse_login(&v, &Config::default().org_name("c")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Organization c not found. Must be one of a, b"
        );
        let e = parse_login(&json!({"org_info": []}), &Config::default()).unwrap_err();
        assert_eq!(e.to_string(), "This user is not part of any organizations.");
    }

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(join_url("http://x/", "/logs3"), "http://x/logs3");
        assert_eq!(join_url("http://x", "logs3"), "http://x/logs3");
    }
}
