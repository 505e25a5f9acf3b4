//! Several backends in one process: each `State` routes its own rows, with
//! its own HTTP configuration, and one backend being down affects no other.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use braintrust::{
    Config, Event, HttpOptions, LifecyclePolicy, LoggerOptions, SpanArgs, State, WithSpan,
};
use braintrust_devserver::{DevServer, DevServerConfig};
use common::config_for;
use serde_json::{json, Value};

fn server() -> DevServer {
    DevServer::start_blocking(DevServerConfig::for_tests()).unwrap()
}

/// A root with a child and a grandchild, nested through the current span.
async fn request(logger: &braintrust::Logger, tag: &str, i: usize) {
    let root = logger.start_span(SpanArgs::new().name(format!("{tag}-root-{i}")));
    async {
        tokio::task::yield_now().await;
        let child =
            braintrust::current_span().start_span(SpanArgs::new().name(format!("{tag}-child-{i}")));
        async {
            tokio::task::yield_now().await;
            let leaf = braintrust::current_span()
                .start_span(SpanArgs::new().name(format!("{tag}-leaf-{i}")));
            leaf.log(Event::new().output(i as u64)).unwrap();
        }
        .in_span(child)
        .await;
    }
    .in_span(root)
    .await;
}

fn check_trees(server: &DevServer, tag: &str, other: &str, n: usize) {
    let rows = server.rows();
    assert_eq!(rows.len(), 3 * n, "{tag}: {} rows", rows.len());
    let project = rows[0]["project_id"].clone();
    for r in &rows {
        let name = r["span_attributes"]["name"].as_str().unwrap();
        assert!(
            name.starts_with(tag) && !name.starts_with(other),
            "{name} on the {tag} server"
        );
        assert_eq!(r["project_id"], project);
    }
    let by_span: std::collections::HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["span_id"].as_str().unwrap(), r))
        .collect();
    for r in &rows {
        let name = r["span_attributes"]["name"].as_str().unwrap();
        if name.contains("-root-") {
            assert_eq!(r["span_parents"], Value::Null);
        } else {
            let parent = by_span[r["span_parents"][0].as_str().unwrap()];
            assert_eq!(
                parent["root_span_id"], r["root_span_id"],
                "{name}: complete tree"
            );
            let expect = if name.contains("-child-") {
                "-root-"
            } else {
                "-child-"
            };
            assert!(parent["span_attributes"]["name"]
                .as_str()
                .unwrap()
                .contains(expect));
        }
    }
}

#[test]
fn two_states_route_their_own_rows_from_concurrent_tasks() {
    let (a, b) = (server(), server());
    let sa = State::new(config_for(&a)).unwrap();
    let sb = State::new(config_for(&b)).unwrap();
    let la = braintrust::init_logger(LoggerOptions::new().project("alpha").state(sa)).unwrap();
    let lb = braintrust::init_logger(LoggerOptions::new().project("beta").state(sb)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (la, lb) = (la.clone(), lb.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    request(&la, "alpha", t * 10 + i).await;
                    request(&lb, "beta", t * 10 + i).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    la.flush().unwrap();
    lb.flush().unwrap();
    check_trees(&a, "alpha", "beta", 80);
    check_trees(&b, "beta", "alpha", 80);
    assert_eq!(a.projects()[0]["name"], "alpha");
    assert_eq!(b.projects()[0]["name"], "beta");
}

#[test]
fn a_backend_down_at_startup_affects_no_other() {
    let up = server();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down_state = State::new(
        Config::default()
            .api_key("k")
            .app_url(format!("http://127.0.0.1:{closed}"))
            .num_retries(2)
            .retry_base_delay(Duration::from_millis(500))
            .lifecycle(LifecyclePolicy::Manual),
    )
    .unwrap();
    let up_state = State::new(config_for(&up)).unwrap();
    let down = braintrust::init_logger(
        LoggerOptions::new()
            .project("down")
            .state(down_state.clone()),
    )
    .unwrap();
    let live = braintrust::init_logger(LoggerOptions::new().project("up").state(up_state.clone()))
        .unwrap();

    // The application's calls never wait on the dead backend.
    let t = Instant::now();
    for i in 0..500 {
        down.log(Event::new().input(json!({"i": i}))).unwrap();
        live.log(Event::new().input(json!({"i": i}))).unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "logging took {:?}",
        t.elapsed()
    );

    // The live backend is flushed while the dead one is still retrying.
    let t = Instant::now();
    live.flush().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "live flush took {:?}",
        t.elapsed()
    );
    assert_eq!(up.rows().len(), 500);
    assert_eq!(up_state.stats().failed_rows, 0);

    // The dead one gives up after its retries, counting every row.
    let err = down.flush().unwrap_err();
    assert!(matches!(err, braintrust::Error::RowsLost(_)), "{err}");
    assert_eq!(
        down_state.stats().failed_rows + down_state.stats().delivered_rows,
        500
    );
    assert_eq!(down_state.stats().delivered_rows, 0);
}

#[test]
fn default_headers_and_user_agent_reach_only_their_server() {
    let (a, b) = (server(), server());
    let sa = State::new(
        config_for(&a).http(
            HttpOptions::new()
                .default_header("x-team", "search")
                .user_agent_suffix("search-service/1.2"),
        ),
    )
    .unwrap();
    let sb = State::new(config_for(&b)).unwrap();
    for (s, name) in [(&sa, "a"), (&sb, "b")] {
        let l =
            braintrust::init_logger(LoggerOptions::new().project(name).state(s.clone())).unwrap();
        l.log(Event::new().input(name)).unwrap();
        l.flush().unwrap();
    }
    for r in a.requests() {
        assert_eq!(
            r.header("x-team"),
            Some("search"),
            "{} {}",
            r.method,
            r.path
        );
        let ua = r.header("user-agent").unwrap();
        assert!(
            ua.starts_with("braintrust-rust/") && ua.ends_with("search-service/1.2"),
            "{ua}"
        );
    }
    for r in b.requests() {
        assert_eq!(r.header("x-team"), None);
        assert!(!r.header("user-agent").unwrap().contains("search-service"));
    }
    assert!(!a.requests().is_empty() && !b.requests().is_empty());
}

fn tls_state(url: &str, http: HttpOptions) -> State {
    State::new(
        Config::default()
            .api_key("k")
            .app_url(url)
            .api_url(url)
            .num_retries(0)
            .http(http.timeout(Duration::from_secs(5)))
            .lifecycle(LifecyclePolicy::Manual),
    )
    .unwrap()
}

fn log_one(state: &State) -> Result<(), braintrust::Error> {
    let l =
        braintrust::init_logger(LoggerOptions::new().project("tls").state(state.clone())).unwrap();
    l.log(Event::new().input("over tls")).unwrap();
    l.flush()
}

#[test]
fn a_private_ca_is_trusted_only_where_configured() {
    let backend = server();
    let pki = tls::make_pki();
    let url = tls::start_tls_proxy(
        &pki,
        backend.url().trim_start_matches("http://").to_string(),
        false,
    );

    let untrusting = tls_state(&url, HttpOptions::new());
    assert!(
        log_one(&untrusting).is_err(),
        "the self-signed CA must not be trusted by default"
    );
    assert_eq!(backend.rows().len(), 0);

    let trusting = tls_state(
        &url,
        HttpOptions::new().add_root_certificate_pem(pki.ca_pem.clone()),
    );
    log_one(&trusting).unwrap();
    assert_eq!(backend.rows().len(), 1);
}

#[test]
fn mutual_tls_with_a_client_identity() {
    let backend = server();
    let pki = tls::make_pki();
    let url = tls::start_tls_proxy(
        &pki,
        backend.url().trim_start_matches("http://").to_string(),
        true,
    );

    let anonymous = tls_state(
        &url,
        HttpOptions::new().add_root_certificate_pem(pki.ca_pem.clone()),
    );
    assert!(
        log_one(&anonymous).is_err(),
        "a client without a certificate is refused"
    );

    let identified = tls_state(
        &url,
        HttpOptions::new()
            .add_root_certificate_pem(pki.ca_pem.clone())
            .identity_pem(pki.client_identity_pem.clone()),
    );
    log_one(&identified).unwrap();
    assert_eq!(backend.rows().len(), 1);
}
