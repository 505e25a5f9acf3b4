//! The JSON query API over real HTTP: filters, pagination, merged fields after an update, one
//! trace as a span tree, and permalinks resolving to the trace page.

use braintrust_devserver::{DevServer, DevServerConfig};
use serde_json::{json, Value};

const KEY: &str = "k";

async fn logs3(server: &DevServer, rows: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/logs3", server.url()))
        .bearer_auth(KEY)
        .json(&json!({"rows": rows, "api_version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
}

async fn get(server: &DevServer, path: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", server.url()))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn names(server: &DevServer, query: &str) -> Vec<String> {
    let (status, body) = get(server, &format!("/dev/api/traces?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["root_span_id"].as_str().unwrap().to_string())
        .collect()
}

/// Trace `t<i>` starts at `1000 + i` seconds: a root span and an llm child.
fn trace(i: usize, root_input: &str, meta: Value, error: bool) -> Value {
    let root = format!("t{i}");
    let start = 1000.0 + i as f64;
    json!([
        {"id": format!("{root}-root"), "span_id": format!("{root}-root"), "root_span_id": root,
         "span_parents": null, "project_id": "p", "log_id": "g",
         "span_attributes": {"name": "handle", "type": "task"}, "input": root_input,
         "metrics": {"start": start, "end": start + 0.5}, "metadata": meta},
        {"id": format!("{root}-llm"), "span_id": format!("{root}-llm"), "root_span_id": root,
         "span_parents": [format!("{root}-root")], "project_id": "p", "log_id": "g",
         "span_attributes": {"name": "chat", "type": "llm"},
         "input": [{"role": "user", "content": format!("Question {i} about Café")}],
         "output": "an answer", "error": if error { json!("rate limited") } else { Value::Null },
         "metrics": {"start": start + 0.1, "end": start + 0.4, "prompt_tokens": 10,
                     "completion_tokens": i}}
    ])
}

#[tokio::test]
async fn trace_list_filters_and_pages() {
    let server = DevServer::start(DevServerConfig::for_tests())
        .await
        .unwrap();
    let mut rows = Vec::new();
    for i in 0..7 {
        let meta = json!({"user": format!("u{}", i % 3), "n": i});
        let t = trace(i, &format!("request {i}"), meta, i == 4);
        rows.extend(t.as_array().unwrap().clone());
    }
    logs3(&server, Value::Array(rows)).await;

    let all = names(&server, "").await;
    assert_eq!(
        all,
        ["t6", "t5", "t4", "t3", "t2", "t1", "t0"],
        "newest first"
    );
    let (_, body) = get(&server, "/dev/api/traces?limit=1").await;
    let t = &body["traces"][0];
    assert_eq!(t["name"], "handle");
    assert_eq!(t["span_count"], 2);
    assert_eq!(t["tokens"], 16);
    assert_eq!(t["duration_ms"], 500.0);
    assert_eq!(t["input_preview"], "request 6");
    assert_eq!(t["error_count"], 0);

    assert_eq!(names(&server, "error=true").await, ["t4"]);
    assert_eq!(names(&server, "error=false").await.len(), 6);
    assert_eq!(names(&server, "metadata.user=u1").await, ["t4", "t1"]);
    assert_eq!(names(&server, "metadata.n=5").await, ["t5"]);
    assert_eq!(names(&server, "metadata.user=u1&error=false").await, ["t1"]);
    assert_eq!(
        names(&server, "q=question%203%20about%20caf%C3%A9").await,
        ["t3"]
    );
    assert_eq!(names(&server, "q=REQUEST%202").await, ["t2"]);
    assert_eq!(names(&server, "q=100%25").await, Vec::<String>::new());
    assert_eq!(names(&server, "name=chat&type=llm").await.len(), 7);
    assert_eq!(names(&server, "name=nope").await, Vec::<String>::new());
    assert_eq!(
        names(&server, "since=1002&until=1004").await,
        ["t4", "t3", "t2"]
    );
    assert_eq!(
        names(
            &server,
            "since=1970-01-01T00:16:42Z&until=1970-01-01T00:16:43.000Z"
        )
        .await,
        ["t3", "t2"]
    );

    // Pages follow next_cursor to the end without repeats.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, body) = get(&server, &format!("/dev/api/traces?limit=3{cursor}")).await;
        for t in body["traces"].as_array().unwrap() {
            seen.push(t["root_span_id"].as_str().unwrap().to_string());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, all);

    for (query, message) in [
        (
            "limit=0",
            "'limit' must be an integer from 1 to 1000 (got '0')",
        ),
        ("error=maybe", "'error' must be true or false (got 'maybe')"),
        (
            "since=soon",
            "'since' must be Unix seconds or an RFC 3339 time (got 'soon')",
        ),
        ("nmae=x", "unknown parameter 'nmae'"),
    ] {
        let (status, body) = get(&server, &format!("/dev/api/traces?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(
            body["error"].as_str().unwrap().starts_with(message),
            "{body}"
        );
    }
}

#[tokio::test]
async fn one_trace_as_a_tree_with_merged_fields() {
    let server = DevServer::start(DevServerConfig::for_tests())
        .await
        .unwrap();
    logs3(&server, trace(1, "hello", json!({"user": "a"}), false)).await;
    // A later update, as update_span sends it: a merge row with only the changed fields.
    logs3(
        &server,
        json!([{"id": "t1-llm", "span_id": "t1-llm", "root_span_id": "t1",
                "project_id": "p", "log_id": "g", "_is_merge": true,
                "scores": {"quality": 0.75}, "metadata": {"reviewed": true}}]),
    )
    .await;
    // A span with two parents, both in the trace.
    logs3(
        &server,
        json!([{"id": "join", "span_id": "join", "root_span_id": "t1",
                "span_parents": ["t1-llm", "t1-root"], "project_id": "p", "log_id": "g",
                "span_attributes": {"name": "join"}, "metrics": {"start": 1001.45}}]),
    )
    .await;
    let (status, body) = get(&server, "/dev/api/traces/t1").await;
    assert_eq!(status, 200);
    assert_eq!(body["trace"]["span_count"], 3);
    assert_eq!(body["spans"].as_array().unwrap().len(), 3);
    let root = &body["tree"][0];
    assert_eq!(root["span"]["span_attributes"]["name"], "handle");
    let llm = &root["children"][0]["span"];
    assert_eq!(llm["span_attributes"]["name"], "chat");
    assert_eq!(llm["scores"], json!({"quality": 0.75}));
    assert_eq!(llm["metadata"], json!({"reviewed": true}));
    assert_eq!(llm["output"], "an answer", "fields of the first write kept");
    assert!(llm["_xact_id"].is_string());
    assert!(llm.get("_is_merge").is_none());
    let join = &root["children"][0]["children"][0]["span"];
    assert_eq!(join["span_parents"], json!(["t1-llm", "t1-root"]));
    let (status, _) = get(&server, "/dev/api/traces/nope").await;
    assert_eq!(status, 404);

    let (_, projects) = get(&server, "/dev/api/projects").await;
    assert_eq!(projects, json!([]), "rows alone do not register a project");
}

#[tokio::test]
async fn permalinks_open_the_trace_page() {
    let server = DevServer::start(DevServerConfig::for_tests())
        .await
        .unwrap();
    logs3(&server, trace(2, "x", json!({}), false)).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for link in [
        "/app/dev-org/object?object_type=project_logs&object_id=p&id=t2-llm",
        "/app/dev-org/p/my%20project/logs?oid=t2-llm",
    ] {
        let resp = http
            .get(format!("{}{link}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303, "{link}");
        assert_eq!(resp.headers()["location"], "/trace/t2?span=t2-llm");
    }
    let resp = http
        .get(format!("{}/trace/t2?span=t2-llm", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("<html"));
    let resp = http
        .get(format!("{}/app/dev-org/object?id=missing", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

async fn post_json(server: &DevServer, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", server.url()))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

/// Two scored traces with an LLM child each, in experiment `e`.
fn scored(e: &str, tag: &str, scores: [f64; 2]) -> Value {
    let mut rows = Vec::new();
    for (i, s) in scores.iter().enumerate() {
        let root = format!("{tag}-{i}");
        let start = 10.0 * i as f64;
        rows.push(
            json!({"id": root, "span_id": root, "root_span_id": root, "span_parents": null,
            "experiment_id": e, "span_attributes": {"name": "task"}, "scores": {"accuracy": s},
            "metrics": {"start": start, "end": start + 2.0}}),
        );
        rows.push(
            json!({"id": format!("{root}-llm"), "span_id": format!("{root}-llm"),
            "root_span_id": root, "span_parents": [root], "experiment_id": e,
            "span_attributes": {"name": "chat", "type": "llm"},
            "metrics": {"start": start, "end": start + 1.0, "prompt_tokens": 10,
                        "completion_tokens": 4}}),
        );
    }
    Value::Array(rows)
}

#[tokio::test]
async fn experiment_summary_as_the_backend_reports_it() {
    let server = DevServer::start(DevServerConfig::for_tests())
        .await
        .unwrap();
    let project = post_json(&server, "/v1/project", json!({"name": "qa"})).await;
    let base = post_json(
        &server,
        "/v1/experiment",
        json!({"project_id": project["id"], "name": "baseline"}),
    )
    .await;
    let next = post_json(
        &server,
        "/v1/experiment",
        json!({"project_id": project["id"], "name": "candidate"}),
    )
    .await;
    logs3(
        &server,
        scored(base["id"].as_str().unwrap(), "b", [0.5, 0.5]),
    )
    .await;
    logs3(
        &server,
        scored(next["id"].as_str().unwrap(), "n", [1.0, 0.5]),
    )
    .await;
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/v1/experiment/{}/summarize?summarize_scores=true",
            server.url(),
            next["id"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let summary: Value = resp.json().await.unwrap();
    assert_eq!(summary["experiment_name"], "candidate");
    assert_eq!(summary["project_name"], "qa");
    assert_eq!(summary["comparison_experiment_name"], "baseline");
    assert_eq!(summary["scores"]["accuracy"]["score"], 0.75);
    assert_eq!(summary["scores"]["accuracy"]["diff"], 0.25);
    assert_eq!(summary["metrics"]["duration"]["metric"], 2.0);
    assert_eq!(summary["metrics"]["duration"]["unit"], "s");
    assert_eq!(summary["metrics"]["total_tokens"]["metric"], 14.0);
    assert_eq!(
        summary["totals"],
        json!({"spans": 4, "traces": 2, "duration_s": 4.0, "prompt_tokens": 20.0,
               "completion_tokens": 8.0, "tokens": 28.0})
    );
    let url = summary["experiment_url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("{}/app/dev-org/p/qa/experiments/candidate", server.url())
    );
    // The link opens the experiment's trace list.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(
        resp.headers()["location"],
        format!("/?experiment_id={}", next["id"].as_str().unwrap()).as_str()
    );
}
