//! End-to-end tests of the dev server over real HTTP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::{json, Value};

const KEY: &str = "test-key";

async fn start(config: DevServerConfig) -> DevServer {
    DevServer::start(config).await.expect("server starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(server: &DevServer, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{path}", server.url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(server: &DevServer, path: &str) -> (u16, Value) {
    let resp = client()
        .get(format!("{}{path}", server.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn logs3(server: &DevServer, rows: Value) -> (u16, Value) {
    post(server, "/logs3", json!({"rows": rows, "api_version": 2})).await
}

fn without_xact(mut row: Value) -> Value {
    let xact = row.as_object_mut().unwrap().remove("_xact_id");
    assert!(
        xact.is_some_and(|x| x.is_string()),
        "every stored row has an _xact_id"
    );
    row
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "braintrust-devserver-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn login_accepts_and_rejects() {
    let server = start(
        DevServerConfig::for_tests()
            .api_keys(vec![KEY.to_string()])
            .org_name("my-org"),
    )
    .await;
    assert!(server.url().starts_with("http://127.0.0.1:"));
    assert!(!server.url().ends_with('/'));

    let (status, body) = post(&server, "/api/apikey/login", Value::Null).await;
    assert_eq!(status, 200);
    let org = &body["org_info"][0];
    assert_eq!(org["name"], "my-org");
    assert_eq!(org["api_url"], server.url().as_str());
    assert_eq!(org["proxy_url"], server.url().as_str());
    assert_eq!(org["git_metadata"]["collect"], "none");
    let org_id = org["id"].as_str().unwrap().to_string();
    assert_eq!(org_id.len(), 36);

    // Same id on a second login.
    let (_, again) = post(&server, "/api/apikey/login", Value::Null).await;
    assert_eq!(again["org_info"][0]["id"], org_id.as_str());

    // Wrong key.
    let resp = client()
        .post(format!("{}/api/apikey/login", server.url()))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string());

    // No key at all, on a data endpoint too.
    for path in ["/api/apikey/login", "/logs3"] {
        let resp = client()
            .post(format!("{}{path}", server.url()))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
    }

    // The viewer does not need a key.
    let resp = client().get(server.url()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("<html"));

    let reqs = server.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/api/apikey/login");
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer test-key"));
    assert_eq!(reqs[2].status, 401);
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn any_non_empty_key_is_accepted_by_default() {
    let server = start(DevServerConfig::for_tests()).await;
    let resp = client()
        .post(format!("{}/api/apikey/login", server.url()))
        .bearer_auth("whatever")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = client()
        .post(format!("{}/api/apikey/login", server.url()))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn project_get_or_create_is_idempotent() {
    let server = start(DevServerConfig::for_tests()).await;
    let (s1, p1) = post(
        &server,
        "/v1/project",
        json!({"name": "proj", "org_name": "dev-org"}),
    )
    .await;
    let (s2, p2) = post(&server, "/v1/project", json!({"name": "proj"})).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(p1, p2);
    assert_eq!(p1["name"], "proj");
    for k in ["id", "org_id", "created"] {
        assert!(p1[k].is_string(), "{k}");
    }
    let id = p1["id"].as_str().unwrap();

    let (status, by_id) = get(&server, &format!("/v1/project/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(by_id, p1);
    let (status, _) = get(&server, "/v1/project/does-not-exist").await;
    assert_eq!(status, 404);

    // Legacy generation.
    let (status, legacy) = post(
        &server,
        "/api/project/register",
        json!({"project_name": "proj", "org_id": p1["org_id"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(legacy["project"], p1);
    let (status, q) = get(&server, &format!("/api/project?id={id}")).await;
    assert_eq!(status, 200);
    assert_eq!(q["name"], "proj");

    let (_, other) = post(
        &server,
        "/api/project/register",
        json!({"project_name": "other"}),
    )
    .await;
    assert_ne!(other["project"]["id"], p1["id"]);
    let projects = server.projects();
    assert_eq!(projects.len(), 2);
    assert_eq!(projects[0]["name"], "proj");
    assert_eq!(projects[1]["name"], "other");
}

#[tokio::test]
async fn experiment_registration_both_generations() {
    let server = start(DevServerConfig::for_tests()).await;
    let (_, project) = post(&server, "/v1/project", json!({"name": "p"})).await;
    let pid = project["id"].clone();

    let body = json!({"project_id": pid, "ensure_new": true, "name": "exp-1", "public": false,
                      "metadata": {"k": "v"}, "tags": ["a"]});
    let (status, e1) = post(&server, "/v1/experiment", body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(e1["name"], "exp-1");
    assert_eq!(e1["project_id"], pid);
    assert_eq!(e1["metadata"], json!({"k": "v"}));
    assert!(e1["id"].is_string() && e1["created"].is_string());

    // ensure_new with an existing name makes a unique name.
    let (_, e2) = post(&server, "/v1/experiment", body.clone()).await;
    assert_eq!(e2["name"], "exp-1-1");
    assert_ne!(e2["id"], e1["id"]);
    let (_, e3) = post(&server, "/v1/experiment", body).await;
    assert_eq!(e3["name"], "exp-1-2");

    // Without ensure_new the existing experiment is reused.
    let (_, same) = post(
        &server,
        "/v1/experiment",
        json!({"project_id": pid, "ensure_new": false, "name": "exp-1"}),
    )
    .await;
    assert_eq!(same["id"], e1["id"]);

    // No name: one is generated.
    let (_, gen1) = post(
        &server,
        "/v1/experiment",
        json!({"project_id": pid, "ensure_new": true}),
    )
    .await;
    let (_, gen2) = post(
        &server,
        "/v1/experiment",
        json!({"project_id": pid, "ensure_new": true}),
    )
    .await;
    assert!(gen1["name"].as_str().is_some_and(|n| !n.is_empty()));
    assert_ne!(gen1["name"], gen2["name"]);

    // Legacy generation.
    let (status, legacy) = post(
        &server,
        "/api/experiment/register",
        json!({"project_name": "legacy-proj", "org_id": "x", "update": false, "experiment_name": "run"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(legacy["project"]["name"], "legacy-proj");
    assert_eq!(legacy["experiment"]["name"], "run");
    assert_eq!(legacy["experiment"]["project_id"], legacy["project"]["id"]);
    let (_, legacy2) = post(
        &server,
        "/api/experiment/register",
        json!({"project_name": "legacy-proj", "project_id": legacy["project"]["id"], "experiment_name": "run"}),
    )
    .await;
    assert_eq!(legacy2["experiment"]["name"], "run-1");
    assert_eq!(legacy2["project"]["id"], legacy["project"]["id"]);

    let (status, got) = get(
        &server,
        &format!("/v1/experiment/{}", e1["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "exp-1");
    assert_eq!(server.experiments().len(), 7);
}

#[tokio::test]
async fn version_reports_payload_limit_only_when_configured() {
    let server = start(DevServerConfig::for_tests()).await;
    let (status, v) = get(&server, "/version").await;
    assert_eq!(status, 200);
    assert!(v["version"]
        .as_str()
        .unwrap()
        .starts_with("braintrust-devserver "));
    assert!(v.get("logs3_payload_max_bytes").is_none());

    let limited = start(DevServerConfig::for_tests().logs3_payload_max_bytes(Some(1234))).await;
    let (_, v) = get(&limited, "/version").await;
    assert_eq!(v["logs3_payload_max_bytes"], 1234);
}

#[tokio::test]
async fn logs3_merge_semantics() {
    let server = start(DevServerConfig::for_tests()).await;
    let ids = json!({"project_id": "p1", "log_id": "g"});
    let with = |extra: Value| {
        let mut row = ids.clone();
        row.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        row
    };
    // First write + merges across separate requests.
    let (status, body) = logs3(
        &server,
        json!([with(
            json!({"id": "r1", "span_id": "s1", "root_span_id": "t1", "span_parents": null,
            "_is_merge": false, "created": "c0", "metrics": {"start": 1.0},
            "span_attributes": {"name": "root", "type": "task"}, "input": {"q": "hi"},
            "tags": ["a"], "metadata": {"m": {"x": 1, "y": [1, 2]}}})
        )]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["row_ids"], json!(["r1"]));
    let first_xact = body["xact_id"].as_str().unwrap().to_string();
    assert_eq!(server.row("r1").unwrap()["_xact_id"], first_xact.as_str());
    logs3(
        &server,
        json!([
            with(
                json!({"id": "r1", "span_id": "s1", "root_span_id": "t1", "span_parents": null,
                "_is_merge": true, "output": {"a": 1}, "tags": ["b", "a"],
                "metadata": {"m": {"y": [3], "z": null}}, "created": "later"})
            ),
            with(
                json!({"id": "r1", "span_id": "s1", "root_span_id": "t1", "span_parents": ["bogus"],
                "_is_merge": true, "metrics": {"end": 2.0}})
            )
        ]),
    )
    .await;
    let mut rows = server.rows();
    assert_eq!(rows.len(), 1);
    // Every write gets a new, larger transaction id (compared as numbers, as the backend's).
    let xact = rows[0]["_xact_id"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(xact > first_xact.parse::<u64>().unwrap());
    rows[0].as_object_mut().unwrap().remove("_xact_id");
    assert_eq!(
        rows[0],
        json!({"project_id": "p1", "log_id": "g", "id": "r1", "span_id": "s1", "root_span_id": "t1",
               "span_parents": null, "created": "c0", "metrics": {"start": 1.0, "end": 2.0},
               "span_attributes": {"name": "root", "type": "task"}, "input": {"q": "hi"},
               "tags": ["a", "b"], "metadata": {"m": {"x": 1, "y": [3], "z": null}},
               "output": {"a": 1}})
    );
    assert!(rows[0].get("_is_merge").is_none());

    // A merge row for an unknown key is stored as is (minus _is_merge).
    logs3(
        &server,
        json!([with(json!({"id": "r2", "_is_merge": true, "output": 5}))]),
    )
    .await;
    assert_eq!(
        without_xact(server.row("r2").unwrap()),
        with(json!({"id": "r2", "output": 5}))
    );

    // A non-merge row replaces the stored row but keeps its position.
    logs3(
        &server,
        json!([with(json!({"id": "r1", "_is_merge": false, "input": 2}))]),
    )
    .await;
    let rows = server.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        without_xact(rows[0].clone()),
        with(json!({"id": "r1", "input": 2}))
    );
    assert_eq!(rows[1]["id"], "r2");

    // The same id under another object is a different row.
    logs3(
        &server,
        json!([{"id": "r1", "experiment_id": "e1", "_is_merge": true, "output": 9}]),
    )
    .await;
    assert_eq!(server.rows().len(), 3);

    // _merge_paths replace instead of merging.
    logs3(
        &server,
        json!([with(
            json!({"id": "r3", "metadata": {"a": {"b": 1}}, "tags": ["x"]})
        )]),
    )
    .await;
    logs3(
        &server,
        json!([with(
            json!({"id": "r3", "_is_merge": true, "_merge_paths": [["metadata", "a"], ["tags"]],
            "metadata": {"a": {"c": 2}}, "tags": ["y"]})
        )]),
    )
    .await;
    assert_eq!(
        without_xact(server.row("r3").unwrap()),
        with(json!({"id": "r3", "metadata": {"a": {"c": 2}}, "tags": ["y"]}))
    );
    assert_eq!(server.logs3_row_count(), 8);

    // Python sends /logs3 without a Content-Type: still accepted.
    let resp = client()
        .post(format!("{}/logs3", server.url()))
        .bearer_auth(KEY)
        .body(r#"{"rows": [{"id": "raw", "project_id": "p1", "log_id": "g"}], "api_version": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(server.row("raw").is_some());

    // Dataset-style delete removes the stored row.
    logs3(
        &server,
        json!([{"id": "d1", "dataset_id": "ds", "input": 1}]),
    )
    .await;
    assert!(server.row("d1").is_some());
    logs3(
        &server,
        json!([{"id": "d1", "dataset_id": "ds", "_object_delete": true}]),
    )
    .await;
    assert!(server.row("d1").is_none());

    // Bad bodies are 400 and store nothing.
    let (status, _) = post(&server, "/logs3", json!({"rows": [1, 2]})).await;
    assert_eq!(status, 400);
    let (status, _) = post(&server, "/logs3", json!({"nope": true})).await;
    assert_eq!(status, 400);
    assert_eq!(server.rows().len(), 5);
}

#[tokio::test]
async fn fault_injection_then_success() {
    let server = start(DevServerConfig::for_tests()).await;
    let faults = server.faults();
    faults.fail_next_logs3(2, 503);
    faults.retry_after(7);
    let row = json!([{"id": "a", "project_id": "p", "log_id": "g"}]);
    for _ in 0..2 {
        let resp = client()
            .post(format!("{}/logs3", server.url()))
            .bearer_auth(KEY)
            .json(&json!({"rows": row, "api_version": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers()["retry-after"], "7");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    assert!(server.rows().is_empty());
    let (status, _) = logs3(&server, row.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(server.rows().len(), 1);
    assert_eq!(server.logs3_row_count(), 1);
    assert_eq!(faults.injected_failures(), 2);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);

    faults.fail_all_logs3(500);
    for _ in 0..3 {
        assert_eq!(logs3(&server, row.clone()).await.0, 500);
    }
    faults.reset();
    assert_eq!(logs3(&server, row.clone()).await.0, 200);

    faults.logs3_delay(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(logs3(&server, row).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn payload_over_limit_is_413() {
    let server = start(DevServerConfig::for_tests().logs3_payload_max_bytes(Some(200))).await;
    let small = json!([{"id": "s", "project_id": "p", "log_id": "g"}]);
    assert_eq!(logs3(&server, small).await.0, 200);
    let big = json!([{"id": "b", "project_id": "p", "log_id": "g", "input": "x".repeat(500)}]);
    let (status, body) = logs3(&server, big).await;
    assert_eq!(status, 413);
    assert!(body["error"].is_string());
    assert!(server.row("b").is_none());
    assert_eq!(server.logs3_row_count(), 1);
}

#[tokio::test]
async fn overflow_flow_end_to_end() {
    let server = start(DevServerConfig::for_tests().logs3_payload_max_bytes(Some(300))).await;
    let rows = json!([
        {"id": "o1", "project_id": "p", "log_id": "g", "input": "x".repeat(400)},
        {"id": "o2", "project_id": "p", "log_id": "g", "input": "y".repeat(400)}
    ]);
    let payload = serde_json::to_vec(&json!({"rows": rows, "api_version": 2})).unwrap();
    let (status, signed) = post(
        &server,
        "/logs3/overflow",
        json!({"content_type": "application/json", "size_bytes": payload.len(),
               "rows": [{"object_ids": {"project_id": "p", "log_id": "g"}, "has_comment": false,
                          "is_delete": false, "input_row": {"byte_size": 420}}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(signed["method"], "PUT");
    let key = signed["key"].as_str().unwrap();
    let url = signed["signedUrl"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/dev/upload/", server.url())));
    assert_eq!(signed["headers"]["content-type"], "application/json");

    let mut put = client().put(url).body(payload.clone());
    for (k, v) in signed["headers"].as_object().unwrap() {
        put = put.header(k, v.as_str().unwrap());
    }
    assert_eq!(put.send().await.unwrap().status().as_u16(), 200);

    let (status, body) = post(
        &server,
        "/logs3",
        json!({"rows": {"type": "logs3_overflow", "key": key, "size_bytes": payload.len()}, "api_version": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.rows().len(), 2);
    assert_eq!(server.row("o2").unwrap()["input"], "y".repeat(400));
    assert_eq!(server.logs3_row_count(), 2);

    let (status, _) = post(
        &server,
        "/logs3",
        json!({"rows": {"type": "logs3_overflow", "key": "missing"}, "api_version": 2}),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn attachment_upload_flow() {
    let server = start(DevServerConfig::for_tests()).await;
    let key = uuid::Uuid::new_v4().to_string();
    let (status, signed) = post(
        &server,
        "/attachment",
        json!({"key": key, "filename": "hello.txt", "content_type": "text/plain", "org_id": "o"}),
    )
    .await;
    assert_eq!(status, 200);
    let url = signed["signedUrl"].as_str().unwrap();
    let (path, token) = url.split_once("?token=").unwrap();
    assert_eq!(path, format!("{}/dev/upload/{key}", server.url()));
    assert_eq!(token.len(), 64, "unguessable token: {token}");
    assert!(signed["headers"].is_object());
    // The signed URL is the only way in without a key: no token, or another key's token, is
    // refused before anything is stored.
    for bad in [
        path.to_string(),
        format!("{path}?token={}", "0".repeat(64)),
        format!("{}/dev/upload/other?token={token}", server.url()),
    ] {
        let resp = client().put(&bad).body("sneaky").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{bad}");
    }

    let (_, info) = get(
        &server,
        &format!("/attachment?key={key}&filename=hello.txt"),
    )
    .await;
    assert_eq!(info["status"]["upload_status"], "uploading");

    let resp = client()
        .put(url)
        .header("content-type", "text/plain")
        .body("hello world")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, _) = post(
        &server,
        "/attachment/status",
        json!({"key": key, "org_id": "o", "status": {"upload_status": "done"}}),
    )
    .await;
    assert_eq!(status, 200);

    let (status, info) = get(&server, &format!("/attachment?key={key}")).await;
    assert_eq!(status, 200);
    assert_eq!(info["status"]["upload_status"], "done");
    let download = info["downloadUrl"].as_str().unwrap();
    let resp = client().get(download).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.unwrap(), "hello world");

    let (_, ext) = get(&server, "/attachment?url=s3%3A%2F%2Fb%2Fk.pdf").await;
    assert_eq!(ext["downloadUrl"], "s3://b/k.pdf");
    assert_eq!(ext["status"]["upload_status"], "done");
    let (status, _) = get(&server, "/attachment?key=unknown").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn trace_tree_of_three_spans() {
    let server = start(DevServerConfig::for_tests()).await;
    let base = json!({"project_id": "p", "log_id": "g", "root_span_id": "trace1"});
    let span = |extra: Value| {
        let mut row = base.clone();
        row.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        row
    };
    logs3(
        &server,
        json!([
            span(
                json!({"id": "1", "span_id": "root", "span_parents": null, "_is_merge": false,
                "span_attributes": {"name": "handle_request", "type": "task"},
                "metrics": {"start": 100.0}})
            ),
            span(
                json!({"id": "2", "span_id": "llm", "span_parents": ["root"], "_is_merge": false,
                "span_attributes": {"name": "Chat Completion", "type": "llm"},
                "metrics": {"start": 100.1, "end": 100.35}, "scores": {"quality": 0.5}})
            ),
            span(
                json!({"id": "3", "span_id": "tool", "span_parents": ["llm"], "_is_merge": false,
                "span_attributes": {"name": "lookup", "type": "tool"},
                "metrics": {"start": 100.2, "end": 100.3},
                "error": "not found\n\ncaused by: missing row"})
            ),
        ]),
    )
    .await;
    // The root ends in a later request (merge).
    logs3(
        &server,
        json!([span(
            json!({"id": "1", "span_id": "root", "_is_merge": true, "metrics": {"end": 100.5}})
        )]),
    )
    .await;
    let tree = server.trace_tree("trace1");
    assert_eq!(
        tree,
        "handle_request [task] 500.0ms\n  Chat Completion [llm] 250.0ms scores: quality=0.5\n    lookup [tool] 100.0ms error: not found\n"
    );
    assert_eq!(server.render_all_traces(), tree);
    assert_eq!(server.trace_tree("unknown"), "");

    // A TypeScript-style root (no `span_parents` key at all) with an unfinished child.
    logs3(
        &server,
        json!([
            {"id": "ts1", "span_id": "a", "root_span_id": "trace2", "project_id": "p", "log_id": "g",
             "span_attributes": {"name": "ts-root", "type": "task"},
             "metrics": {"start": 200.0, "end": 200.002}},
            {"id": "ts2", "span_id": "b", "root_span_id": "trace2", "span_parents": ["a"],
             "project_id": "p", "log_id": "g", "span_attributes": {"name": "pending"},
             "metrics": {"start": 200.001}}
        ]),
    )
    .await;
    assert_eq!(
        server.trace_tree("trace2"),
        "ts-root [task] 2.00ms\n  pending (unfinished)\n"
    );
    assert_eq!(
        server.render_all_traces(),
        format!("{tree}ts-root [task] 2.00ms\n  pending (unfinished)\n")
    );

    // The viewer APIs see the same trace.
    let traces: Value = client()
        .get(format!("{}/dev/api/traces", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let traces = &traces["traces"];
    assert_eq!(traces.as_array().unwrap().len(), 2);
    assert_eq!(traces[0]["name"], "ts-root", "newest first");
    assert_eq!(traces[0]["span_count"], 2);
    assert_eq!(traces[1]["name"], "handle_request");
    assert_eq!(traces[1]["span_count"], 3);
    let rows: Value = client()
        .get(format!("{}/dev/api/rows?project_id=p", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 5);
    let html = client()
        .get(server.url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/dev/api/traces") && !html.contains("https://"));
}

#[tokio::test]
async fn persistence_across_restart() {
    let dir = temp_dir("persist");
    let db = dir.join("bt.sqlite");
    let cfg = || DevServerConfig::for_tests().db_path(Some(db.clone()));

    let server = start(cfg()).await;
    let (_, login) = post(&server, "/api/apikey/login", Value::Null).await;
    let org_id = login["org_info"][0]["id"].clone();
    let (_, project) = post(&server, "/v1/project", json!({"name": "kept"})).await;
    let (_, exp) = post(
        &server,
        "/v1/experiment",
        json!({"project_id": project["id"], "name": "e", "ensure_new": true}),
    )
    .await;
    logs3(
        &server,
        json!([{"id": "row", "project_id": project["id"], "log_id": "g", "input": 1}]),
    )
    .await;
    let key = "att-key";
    let (_, signed) = post(&server, "/attachment", json!({"key": key})).await;
    client()
        .put(signed["signedUrl"].as_str().unwrap())
        .body("bytes")
        .send()
        .await
        .unwrap();
    server.shutdown();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "database readable by its owner only");
    }

    let server = start(cfg()).await;
    let (_, login2) = post(&server, "/api/apikey/login", Value::Null).await;
    assert_eq!(login2["org_info"][0]["id"], org_id);
    let (_, project2) = post(&server, "/v1/project", json!({"name": "kept"})).await;
    assert_eq!(project2["id"], project["id"]);
    assert_eq!(server.experiments(), vec![exp.clone()]);
    assert_eq!(server.row("row").unwrap()["input"], 1);
    // Merging continues against the persisted row.
    logs3(
        &server,
        json!([{"id": "row", "project_id": project["id"], "log_id": "g", "_is_merge": true, "output": 2}]),
    )
    .await;
    assert_eq!(server.rows().len(), 1);
    assert_eq!(server.row("row").unwrap()["output"], 2);
    let (_, exp2) = post(
        &server,
        "/v1/experiment",
        json!({"project_id": project["id"], "name": "e", "ensure_new": true}),
    )
    .await;
    assert_eq!(exp2["name"], "e-1");
    let body = client()
        .get(format!("{}/dev/upload/{key}", server.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "bytes");
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn start_blocking_works_from_sync_code() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).expect("starts");
    let url = server.url();
    // Use a throwaway runtime as the "client" side.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (status, _) = logs3(
            &server,
            json!([{"id": "x", "project_id": "p", "log_id": "g"}]),
        )
        .await;
        assert_eq!(status, 200);
        assert!(server.wait_for_rows(1, Duration::from_secs(5)).await);
        assert!(!server.wait_for_rows(2, Duration::from_millis(50)).await);
    });
    let clone = server.clone();
    server.shutdown();
    // The clone refers to the stopped server; new connections are refused soon after.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = false;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(url.trim_start_matches("http://")).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "server still accepting after shutdown");
    drop(clone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_blocking_inside_a_runtime() {
    let server = DevServer::start_blocking(DevServerConfig::for_tests()).expect("starts");
    let (status, _) = post(&server, "/api/apikey/login", Value::Null).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_throughput() {
    let server = start(DevServerConfig::for_tests()).await;
    let total = 20_000;
    let per_request = 100;
    let bodies: Vec<String> = (0..total / per_request)
        .map(|b| {
            let rows: Vec<String> = (0..per_request)
                .map(|i| {
                    let n = b * per_request + i;
                    json!({"id": format!("row-{n}"), "span_id": format!("s{n}"),
                           "root_span_id": format!("t{}", n / 10), "span_parents": null,
                           "project_id": "p", "log_id": "g", "_is_merge": false,
                           "created": "2026-01-01T00:00:00Z", "metrics": {"start": 1.0, "end": 2.0},
                           "span_attributes": {"name": "span", "type": "task", "exec_counter": n},
                           "input": {"question": "what is the answer?", "n": n},
                           "output": {"answer": 42}, "metadata": {"model": "gpt"}})
                    .to_string()
                })
                .collect();
            format!("{{\"rows\": [{}], \"api_version\": 2}}", rows.join(","))
        })
        .collect();
    let url = format!("{}/logs3", server.url());
    let http = client();
    let t = Instant::now();
    let mut handles = Vec::new();
    for chunk in bodies.chunks(bodies.len() / 4) {
        let chunk = chunk.to_vec();
        let http = http.clone();
        let url = url.clone();
        handles.push(tokio::spawn(async move {
            for body in chunk {
                let resp = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = t.elapsed();
    assert_eq!(server.logs3_row_count(), total);
    assert!(server.wait_for_rows(total, Duration::from_secs(1)).await);
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!("ingested {total} rows in {elapsed:?} ({rate:.0} rows/s)");
    // Generous bound so unoptimised debug builds on slow CI machines pass too.
    assert!(
        elapsed < Duration::from_secs(60),
        "ingest too slow: {elapsed:?}"
    );
}

#[tokio::test]
async fn database_of_the_previous_version_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.sqlite");
    {
        // The rows table as the previous release created it, rows stored as the client sent them.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
             CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 project_id TEXT NOT NULL, experiment_id TEXT NOT NULL, dataset_id TEXT NOT NULL,
                 prompt_session_id TEXT NOT NULL, log_id TEXT NOT NULL, id TEXT NOT NULL,
                 root_span_id TEXT, is_root INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL,
                 UNIQUE(project_id, experiment_id, dataset_id, prompt_session_id, log_id, id));",
        )
        .unwrap();
        for (id, parents) in [("r", "null"), ("c", "[\"r\"]")] {
            let data = format!(
                r#"{{"id":"{id}","span_id":"{id}","root_span_id":"t","span_parents":{parents},
                    "project_id":"p","log_id":"g","_is_merge":false,
                    "span_attributes":{{"name":"n-{id}"}},"metrics":{{"start":1,"end":2}}}}"#
            );
            conn.execute(
                "INSERT INTO rows (project_id, experiment_id, dataset_id, prompt_session_id,
                     log_id, id, root_span_id, is_root, data)
                 VALUES ('p', '', '', '', 'g', ?1, 't', ?2, ?3)",
                rusqlite::params![id, id == "r", data],
            )
            .unwrap();
        }
    }
    let server = start(DevServerConfig::for_tests().db_path(Some(db))).await;
    let rows = server.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["span_attributes"]["name"], "n-c");
    assert!(rows.iter().all(|r| r.get("_is_merge").is_none()));
    assert!(rows.iter().all(|r| r["_xact_id"].is_string()));
    assert_eq!(server.trace_tree("t"), "n-r 1.00s\n  n-c 1.00s\n");
    let (_, list) = get(&server, "/dev/api/traces").await;
    assert_eq!(list["traces"][0]["span_count"], 2);
}
