//! Sending rows to `/logs3`: request bodies under the size limit, the one
//! retry policy, 413 splitting down to a single row, the overflow upload
//! (spec §4.7), and payload files for what fails.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use serde_json::{Map, Value};

use super::accounting::Counters;
use super::payloads;
use super::rows::Prepared;
use crate::api::{describe_reqwest, join_url, truncate, Api, LoginInfo};
use crate::config::Config;
use crate::retry::{retry_after_header, RetryPolicy};

/// What the server said about payload limits (spec §4.1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_request_size: usize,
    pub overflow: bool,
}

/// How a set of rows ended.
pub(crate) enum Settle {
    Delivered,
    /// Failed for good, with the cause; `dumped` tells whether the rows
    /// were written to the failed-payload directory.
    Failed {
        cause: String,
        dumped: bool,
    },
}

/// One attempt's result.
enum Attempt {
    Ok,
    TooLarge(String),
    Permanent(String),
    Transient(String, Option<Duration>),
}

/// Everything a round needs to send its rows.
///
/// The retry budget holds per round, not per batch: once a batch has spent
/// its budget on transient failures (a hung, refusing or failing backend),
/// the batches of the round still to try fail at once with that cause, so
/// a round lasts about one budget however many batches it holds.
pub(crate) struct Transport<'a> {
    pub http: reqwest::Client,
    pub api: &'a Api,
    pub login: LoginInfo,
    pub limits: Limits,
    pub config: &'a Config,
    pub counters: &'a Counters,
    pub policy: RetryPolicy,
    /// Set when a batch of this round spent its retry budget: the cause.
    pub spent: std::cell::RefCell<Option<String>>,
    /// From [`logs3_url`].
    pub logs3: (reqwest::Url, String),
}

/// The `/logs3` endpoint of `login`, parsed once per round (not per
/// request), and its text as errors show it. A URL that does not parse is
/// the cause every row of the round fails with.
pub(crate) fn logs3_url(login: &LoginInfo) -> Result<(reqwest::Url, String), String> {
    let url = join_url(&login.api_url, "logs3");
    let shown = crate::config::redact_url(&url);
    match reqwest::Url::parse(&url) {
        Ok(u) => {
            crate::config::warn_if_plain_http(&url);
            Ok((u, shown))
        }
        Err(e) => Err(format!("POST {shown}: not a valid URL ({e})")),
    }
}

impl<'a> Transport<'a> {
    /// Delivers rows `idx` of `rows`, settling each exactly once through
    /// `settle`. Never returns an error: failures are settled as such.
    pub(crate) fn deliver<'s>(
        &'s self,
        rows: &'s Prepared,
        idx: Vec<usize>,
        settle: &'s dyn Fn(&[usize], Settle),
    ) -> LocalBoxFuture<'s, ()> {
        Box::pin(async move {
            // Shared, not copied, by every attempt; read as text without
            // checking it again (it was built from `&str`s).
            let text = Arc::new(body_of(rows, &idx));
            let wire = bytes::Bytes::from_owner(BodyText(text.clone()));
            let body = text.as_str();
            if let Some(dir) = &self.config.all_payloads_dir {
                payloads::write(dir, body);
            }
            let max = self.limits.max_request_size;
            let mut oversized = body.len() > max;
            if oversized && idx.len() > 1 {
                return self.split(rows, idx, settle).await;
            }
            if oversized && !self.limits.overflow {
                let cause = format!(
                    "a row of {} bytes exceeds the request size limit of {max} bytes (BRAINTRUST_MAX_REQUEST_SIZE) and the server offers no overflow upload",
                    body.len()
                );
                return self.fail(body, &idx, cause, settle);
            }
            let mut retry = self.policy.start();
            let mut overflow_key: Option<String> = None;
            loop {
                if let Some(cause) = self.spent.borrow().clone() {
                    let cause =
                        format!("not sent: the retry budget of this round was spent ({cause})");
                    return self.fail(body, &idx, cause, settle);
                }
                let attempt_deadline =
                    (Instant::now() + self.config.effective_timeout()).min(retry.budget_deadline());
                let attempt = async {
                    if oversized {
                        let key = match &overflow_key {
                            Some(k) => k.clone(),
                            None => match self.upload_overflow(body).await {
                                Ok(k) => {
                                    overflow_key = Some(k.clone());
                                    k
                                }
                                Err(a) => return a,
                            },
                        };
                        self.post(overflow_ref(&key, body.len()).into()).await
                    } else {
                        self.post(wire.clone()).await
                    }
                };
                let result = match tokio::time::timeout_at(attempt_deadline.into(), attempt).await {
                    Ok(a) => a,
                    Err(_) => Attempt::Transient(
                        format!(
                            "POST {}: no answer within {:.1} s",
                            self.logs3.1,
                            self.config
                                .effective_timeout()
                                .min(self.policy.total_budget())
                                .as_secs_f64()
                        ),
                        None,
                    ),
                };
                match result {
                    Attempt::Ok => return settle(&idx, Settle::Delivered),
                    Attempt::TooLarge(_) if idx.len() > 1 => {
                        return self.split(rows, idx, settle).await;
                    }
                    Attempt::TooLarge(msg) if self.limits.overflow && !oversized => {
                        // One row the server will not take inline: upload it.
                        let _ = msg;
                        oversized = true;
                    }
                    Attempt::TooLarge(msg) => {
                        let cause = format!(
                            "{msg}; a single row of {} bytes is over the server's limit",
                            body.len()
                        );
                        return self.fail(body, &idx, cause, settle);
                    }
                    Attempt::Permanent(msg) => return self.fail(body, &idx, msg, settle),
                    Attempt::Transient(msg, server_wait) => match retry.next_delay(server_wait) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => {
                            let tries = retry.attempts();
                            // Tries were left: the server's wait is what ended it.
                            let why = match server_wait {
                                Some(w) if tries < self.policy.attempts() => format!(
                                    "; the server asked to retry after {} s, beyond {} retry budget",
                                    w.as_secs_f64(),
                                    if w > self.policy.total_budget() {
                                        "the"
                                    } else {
                                        "what is left of the"
                                    }
                                ),
                                _ => String::new(),
                            };
                            let cause = format!(
                                "{msg} (after {tries} tr{}{why})",
                                if tries == 1 { "y" } else { "ies" }
                            );
                            self.spent.borrow_mut().get_or_insert_with(|| cause.clone());
                            return self.fail(body, &idx, cause, settle);
                        }
                    },
                }
            }
        })
    }

    /// A 413 (or a body over the limit): send each half on its own.
    async fn split(&self, rows: &Prepared, idx: Vec<usize>, settle: &dyn Fn(&[usize], Settle)) {
        let mut left = idx;
        let right = left.split_off(left.len() / 2);
        futures_util::future::join(
            self.deliver(rows, left, settle),
            self.deliver(rows, right, settle),
        )
        .await;
    }

    fn fail(&self, body: &str, idx: &[usize], cause: String, settle: &dyn Fn(&[usize], Settle)) {
        let dumped = match &self.config.failed_payloads_dir {
            Some(dir) => payloads::write(dir, body),
            None => false,
        };
        settle(idx, Settle::Failed { cause, dumped });
    }

    async fn post(&self, body: bytes::Bytes) -> Attempt {
        let key = self.config.api_key.clone().unwrap_or_default();
        let shown = &self.logs3.1;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let size = body.len();
        let r = self
            .http
            .post(self.logs3.0.clone())
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let resp = match r {
            Ok(resp) => resp,
            Err(e) => {
                return Attempt::Transient(format!("POST {shown}: {}", describe_reqwest(&e)), None)
            }
        };
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Attempt::Ok;
        }
        let wait = retry_after_header(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let msg = format!(
            "POST {shown} answered {status} for a {size}-byte body: {}",
            truncate(self.config.redact_key(text.trim()).as_str(), 300)
        );
        classify(status, msg, wait)
    }

    /// Spec §4.7: announce the upload, PUT (or POST) the body to the signed
    /// URL, and return the key to reference it by.
    async fn upload_overflow(&self, body: &str) -> Result<String, Attempt> {
        let rows_meta: Vec<Value> = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("rows").and_then(Value::as_array).cloned())
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let mut ids = Map::new();
                for k in ["experiment_id", "dataset_id", "prompt_session_id", "project_id", "log_id", "function_data"] {
                    if let Some(v) = r.get(k) {
                        ids.insert(k.into(), v.clone());
                    }
                }
                serde_json::json!({
                    "object_ids": ids,
                    "has_comment": false,
                    "is_delete": false,
                    "input_row": {"byte_size": serde_json::to_string(r).map(|s| s.len()).unwrap_or(0)}
                })
            })
            .collect();
        let req = serde_json::json!({"content_type": "application/json", "size_bytes": body.len(), "rows": rows_meta});
        let v = self
            .api
            .api_json(
                &self.login,
                reqwest::Method::POST,
                "logs3/overflow",
                Some(req),
            )
            .await
            .map_err(|e| {
                if e.is_transient() {
                    Attempt::Transient(format!("overflow request failed: {e}"), None)
                } else {
                    Attempt::Permanent(format!("overflow request failed: {e}"))
                }
            })?;
        let str_field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let url = str_field("signedUrl")
            .ok_or_else(|| Attempt::Permanent("overflow response has no signedUrl".into()))?;
        let key = str_field("key")
            .ok_or_else(|| Attempt::Permanent("overflow response has no key".into()))?;
        let method = str_field("method").unwrap_or_else(|| "PUT".into());
        let headers = v
            .get("headers")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let rb = if method.eq_ignore_ascii_case("POST") {
            let fields = v
                .get("fields")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let ct = fields
                .get("Content-Type")
                .and_then(Value::as_str)
                .unwrap_or("application/json")
                .to_string();
            let mut form = reqwest::multipart::Form::new();
            for (k, fv) in &fields {
                form = form.text(k.clone(), fv.as_str().unwrap_or_default().to_string());
            }
            let part = reqwest::multipart::Part::bytes(body.as_bytes().to_vec())
                .file_name("logs3.json")
                .mime_str(&ct)
                .map_err(|e| Attempt::Permanent(e.to_string()))?;
            let mut rb = self.http.post(&url).multipart(form.part("file", part));
            for (k, hv) in &headers {
                if !k.eq_ignore_ascii_case("content-type") {
                    rb = rb.header(k.as_str(), hv.as_str().unwrap_or_default());
                }
            }
            rb
        } else {
            let mut rb = self.http.put(&url).body(body.to_string());
            for (k, hv) in &headers {
                rb = rb.header(k.as_str(), hv.as_str().unwrap_or_default());
            }
            if url.contains("blob.core.windows.net") {
                rb = rb.header("x-ms-blob-type", "BlockBlob");
            }
            rb
        };
        match rb.send().await {
            Ok(r) if r.status().is_success() => Ok(key),
            Ok(r) => {
                let status = r.status().as_u16();
                let wait = retry_after_header(r.headers());
                Err(classify(
                    status,
                    format!("overflow upload answered {status}"),
                    wait,
                ))
            }
            Err(e) => Err(Attempt::Transient(
                format!("overflow upload failed: {}", describe_reqwest(&e)),
                None,
            )),
        }
    }
}

/// 413 splits; 408, 429 and 5xx are retried; any other status is permanent.
fn classify(status: u16, msg: String, wait: Option<Duration>) -> Attempt {
    match status {
        413 => Attempt::TooLarge(msg),
        408 | 429 | 500..=599 => Attempt::Transient(msg, wait),
        _ => Attempt::Permanent(msg),
    }
}

fn body_of(rows: &Prepared, idx: &[usize]) -> String {
    let texts: Vec<&str> = idx.iter().map(|&i| rows.row(i)).collect();
    crate::merge::logs3_body(&texts)
}

/// A request body's text as the bytes `reqwest` sends.
struct BodyText(Arc<String>);

impl AsRef<[u8]> for BodyText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn overflow_ref(key: &str, size: usize) -> String {
    serde_json::json!({
        "rows": {"type": "logs3_overflow", "key": key, "size_bytes": size},
        "api_version": 2
    })
    .to_string()
}
