//! `#[traced]` on sync functions, against the local server: what each form
//! logs, errors, panics, methods, nesting.

use braintrust::{
    current_span, init_logger, traced, traced_sync, Config, Event, Logger, LoggerOptions, SpanArgs,
    State,
};
use braintrust_devserver::{DevServer, DevServerConfig};
use serde::Serialize;
use serde_json::{json, Value};

/// Runs `f` under a root span of a fresh server's logger (not the current
/// logger, so tests run in parallel) and returns the stored rows.
fn rows_of(f: impl FnOnce()) -> Rows {
    let server = DevServer::start_blocking(DevServerConfig::default()).unwrap();
    let state = State::new(Config::default().api_key("k").app_url(server.url())).unwrap();
    let logger: Logger =
        init_logger(LoggerOptions::new().project("traced-sync").state(state)).unwrap();
    let root = logger.start_span(SpanArgs::new().name("test-root"));
    root.in_scope(f);
    root.end();
    logger.flush().unwrap();
    Rows(server.rows())
}

struct Rows(Vec<Value>);

impl Rows {
    fn named(&self, name: &str) -> &Value {
        let mut found = self
            .0
            .iter()
            .filter(|r| r["span_attributes"]["name"] == name);
        let row = found
            .next()
            .unwrap_or_else(|| panic!("no span named {name:?} in {:#?}", self.0));
        assert!(found.next().is_none(), "several spans named {name:?}");
        row
    }
    fn parent_of(&self, name: &str) -> &Value {
        let row = self.named(name);
        let parents = row["span_parents"].as_array().expect("a child span");
        assert_eq!(parents.len(), 1);
        self.0
            .iter()
            .find(|r| r["span_id"] == parents[0])
            .expect("the parent is stored")
    }
}

fn absent(v: &Value) -> bool {
    v.is_null()
}

// ----- functions under test -----

#[braintrust::traced]
fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[traced(type = "llm", name = "Custom LLM")]
fn custom(prompt: &str) -> String {
    format!("echo: {prompt}")
}

#[derive(Serialize)]
struct Doc {
    title: String,
    words: usize,
}

#[derive(Debug)]
struct DebugOnly {
    id: u8,
}

struct Opaque;

#[traced]
fn kinds(doc: &Doc, dbg: DebugOnly, _opaque: &Opaque, tags: Vec<&str>) -> Option<u8> {
    (dbg.id > 100).then_some(dbg.id)
}

#[derive(Debug)]
struct LoadError {
    path: String,
    source: std::io::Error,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not load {}", self.path)
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[traced]
fn load(path: &str) -> Result<usize, LoadError> {
    if path.ends_with(".txt") {
        return Ok(path.len());
    }
    Err(LoadError {
        path: path.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    })
}

#[traced]
fn parse_twice(text: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    let n: u32 = text.parse()?;
    Ok(n * 2)
}

#[traced]
fn string_error(fail: bool) -> Result<(), String> {
    if fail {
        Err("plain message".into())
    } else {
        Ok(())
    }
}

#[traced(skip(client, api_key))]
fn skipping(client: &Opaque, api_key: &str, question: &str) -> usize {
    let _ = (client, api_key);
    question.len()
}

#[traced(input(question))]
fn only_question(api_key: &str, question: &str) -> usize {
    api_key.len() + question.len()
}

#[traced(skip_all)]
fn skip_everything(password: &str) -> bool {
    !password.is_empty()
}

#[traced(no_output)]
fn secret_output(name: &str) -> Result<String, String> {
    if name.is_empty() {
        Err("empty name".into())
    } else {
        Ok(format!("secret-{name}"))
    }
}

#[traced(notrace_io)]
fn nothing_logged(body: &str) -> String {
    body.to_uppercase()
}

#[traced(metadata = json!({"model": model, "temperature": 0.1}))]
fn with_metadata(model: &str, prompt: &str) -> usize {
    model.len() + prompt.len()
}

#[traced]
fn patterns((x, y): (i32, i32), Doc { title, .. }: Doc, [first, _]: [u8; 2], _: u8) -> i32 {
    let _ = (title, first);
    x * y
}

#[traced]
fn generic<T: Serialize, U>(shown: T, hidden: U) -> usize
where
    U: Clone,
{
    let _ = (shown, hidden.clone());
    1
}

#[traced]
fn outer(n: u32) -> u32 {
    current_span()
        .log(Event::new().metadata(json!({"depth": "outer"})))
        .unwrap();
    middle(n) + 1
}

#[traced]
fn middle(n: u32) -> u32 {
    inner(n) * 2
}

#[traced]
fn inner(n: u32) -> u32 {
    current_span()
        .log(Event::new().metadata(json!({"depth": "inner"})))
        .unwrap();
    n
}

#[traced]
fn explode(code: u32) -> u32 {
    if code > 0 {
        panic!("exploded with code {code}");
    }
    code
}

#[traced]
fn nested_explode() -> u32 {
    explode(7) + 1
}

#[traced]
fn located() {}

const UNWRAP_LINE: u32 = line!() + 3;
#[traced]
fn unwrap_none() -> u8 {
    std::hint::black_box(None::<u8>).unwrap()
}

struct Account {
    balance: i64,
}

impl Account {
    #[traced]
    fn balance(&self) -> i64 {
        self.balance
    }

    #[traced]
    fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }

    #[traced]
    fn balance_ref(&mut self) -> &mut i64 {
        &mut self.balance
    }

    #[traced]
    fn close(self, reason: &str) -> String {
        format!("closed with {} ({reason})", self.balance)
    }

    #[traced(name = "Account::open")]
    fn open(balance: i64) -> Account {
        Account { balance }
    }
}

// ----- tests -----

#[test]
fn default_name_type_input_and_output() {
    let rows = rows_of(|| {
        assert_eq!(add(2, 3), 5);
        assert_eq!(custom("hi"), "echo: hi");
    });
    let add = rows.named("add");
    assert_eq!(add["span_attributes"]["type"], "function");
    assert_eq!(add["input"], json!({"a": 2, "b": 3}));
    assert_eq!(add["output"], json!(5));
    assert!(absent(&add["error"]));
    assert!(add["metrics"]["end"].as_f64().unwrap() >= add["metrics"]["start"].as_f64().unwrap());
    // Python records the caller's function there; Rust cannot know it.
    assert!(absent(&add["context"]["caller_functionname"]));
    let custom = rows.named("Custom LLM");
    assert_eq!(custom["span_attributes"]["type"], "llm");
    assert_eq!(custom["input"], json!({"prompt": "hi"}));
    assert_eq!(custom["output"], "echo: hi");
    assert_eq!(
        rows.parent_of("add")["span_attributes"]["name"],
        "test-root"
    );
}

#[test]
fn values_are_serialized_else_debug_else_a_placeholder() {
    let rows = rows_of(|| {
        let doc = Doc {
            title: "t".into(),
            words: 3,
        };
        assert_eq!(
            kinds(&doc, DebugOnly { id: 9 }, &Opaque, vec!["a", "b"]),
            None
        );
    });
    let k = rows.named("kinds");
    assert_eq!(
        k["input"],
        json!({
            "doc": {"title": "t", "words": 3},
            "dbg": "DebugOnly { id: 9 }",
            "_opaque": "<unserializable &traced_sync::Opaque>",
            "tags": ["a", "b"],
        })
    );
    // `None` is a normal output, not an error.
    assert!(k["output"].is_null());
    assert!(k.as_object().unwrap().contains_key("output"));
    assert!(absent(&k["error"]));
}

#[test]
fn results_log_ok_as_output_and_err_as_error_with_its_sources() {
    let rows = rows_of(|| {
        assert_eq!(load("a.txt").unwrap(), 5);
        let err = load("missing.bin").unwrap_err();
        // The error comes back unchanged.
        assert_eq!(err.path, "missing.bin");
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(parse_twice("21").unwrap(), 42);
        assert!(parse_twice("x").is_err());
        assert_eq!(string_error(true), Err("plain message".to_string()));
    });
    let ok = rows
        .0
        .iter()
        .find(|r| r["input"]["path"] == "a.txt")
        .unwrap();
    assert_eq!(ok["output"], json!(5));
    assert!(absent(&ok["error"]));
    let err = rows
        .0
        .iter()
        .find(|r| r["input"]["path"] == "missing.bin")
        .unwrap();
    assert_eq!(
        err["error"],
        "could not load missing.bin\n\nCaused by:\n    0: no such file"
    );
    assert!(absent(&err["output"]));
    let boxed = rows.0.iter().find(|r| r["input"]["text"] == "x").unwrap();
    assert_eq!(boxed["error"], "invalid digit found in string");
    assert_eq!(rows.named("string_error")["error"], "plain message");
}

#[test]
fn options_choose_what_is_logged() {
    let rows = rows_of(|| {
        skipping(&Opaque, "sk-123", "why?");
        only_question("sk-123", "why?");
        skip_everything("hunter2");
        secret_output("x").unwrap();
        nothing_logged("shh");
        with_metadata("gpt-4o", "hi");
    });
    assert_eq!(rows.named("skipping")["input"], json!({"question": "why?"}));
    assert_eq!(
        rows.named("only_question")["input"],
        json!({"question": "why?"})
    );
    let all = rows.named("skip_everything");
    assert!(absent(&all["input"]));
    assert_eq!(all["output"], json!(true));
    let secret = rows.named("secret_output");
    assert_eq!(secret["input"], json!({"name": "x"}));
    assert!(absent(&secret["output"]));
    let none = rows.named("nothing_logged");
    assert!(absent(&none["input"]) && absent(&none["output"]));
    let meta = rows.named("with_metadata");
    assert_eq!(
        meta["metadata"],
        json!({"model": "gpt-4o", "temperature": 0.1})
    );
    assert_eq!(meta["output"], json!(8));
}

#[test]
fn no_output_still_logs_errors() {
    let rows = rows_of(|| {
        assert!(secret_output("").is_err());
    });
    let r = rows.named("secret_output");
    assert_eq!(r["error"], "empty name");
    assert!(absent(&r["output"]));
}

#[test]
fn pattern_and_generic_arguments() {
    let rows = rows_of(|| {
        let doc = Doc {
            title: "t".into(),
            words: 1,
        };
        assert_eq!(patterns((3, 4), doc, [1, 2], 0), 12);
        assert_eq!(generic(json!({"k": 1}), Opaque.clone_me()), 1);
    });
    assert_eq!(
        rows.named("patterns")["input"],
        json!({"x": 3, "y": 4, "title": "t", "first": 1})
    );
    let g = rows.named("generic");
    assert_eq!(g["input"]["shown"], json!({"k": 1}));
    assert_eq!(g["input"]["hidden"], "<unserializable traced_sync::Opaque>");
}

impl Opaque {
    fn clone_me(&self) -> Opaque {
        Opaque
    }
}
impl Clone for Opaque {
    fn clone(&self) -> Self {
        Opaque
    }
}

#[test]
fn nested_calls_are_children_and_current_span_logs_on_them() {
    let rows = rows_of(|| {
        assert_eq!(outer(5), 11);
    });
    assert_eq!(
        rows.parent_of("outer")["span_attributes"]["name"],
        "test-root"
    );
    assert_eq!(rows.parent_of("middle")["span_attributes"]["name"], "outer");
    assert_eq!(rows.parent_of("inner")["span_attributes"]["name"], "middle");
    assert_eq!(rows.named("outer")["metadata"], json!({"depth": "outer"}));
    assert_eq!(rows.named("inner")["metadata"], json!({"depth": "inner"}));
    let trace = rows.named("inner")["root_span_id"].clone();
    assert!(rows.0.iter().all(|r| r["root_span_id"] == trace));
}

#[test]
fn panics_are_logged_and_keep_unwinding() {
    let rows = rows_of(|| {
        let payload = std::panic::catch_unwind(nested_explode).unwrap_err();
        // The payload is the original one.
        assert_eq!(
            payload.downcast_ref::<String>().unwrap(),
            "exploded with code 7"
        );
        // The unwinding restored the context: the test root is current again.
        let current = current_span();
        assert!(!current.is_noop() && current.span_parents().is_empty());
    });
    assert_eq!(
        rows.named("explode")["error"],
        "panicked: exploded with code 7"
    );
    assert_eq!(
        rows.named("nested_explode")["error"],
        "panicked: exploded with code 7"
    );
    assert!(rows.named("explode")["metrics"]["end"].is_number());
    assert_eq!(
        rows.parent_of("explode")["span_attributes"]["name"],
        "nested_explode"
    );
}

/// `context.caller_filename` / `caller_lineno` are the call site, as the
/// Python SDK records them (what the UI's "go to code" opens), for functions
/// and methods, and panics in the body keep their own location.
#[test]
fn caller_context_is_the_call_site() {
    let mut lines = Vec::new();
    let rows = rows_of(|| {
        #[rustfmt::skip]
        let a = (located(), line!()).1;
        #[rustfmt::skip]
        let b = (Account::open(1), line!()).1;
        lines.extend([a, b]);
    });
    for (name, line) in [("located", lines[0]), ("Account::open", lines[1])] {
        let ctx = &rows.named(name)["context"];
        assert_eq!(ctx["caller_lineno"], json!(line), "{name}: {ctx}");
        assert!(
            ctx["caller_filename"]
                .as_str()
                .unwrap()
                .ends_with("traced_sync.rs"),
            "{ctx}"
        );
        assert!(absent(&ctx["caller_functionname"]), "{ctx}");
    }
    // `#[track_caller]` does not leak into the body: a panic there is
    // reported where it happens, not at the call.
    let me = std::thread::current().id();
    let (tx, rx) = std::sync::mpsc::channel();
    let rows = rows_of(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == me {
                let _ = tx.send(info.location().map(|l| l.line()));
            }
        }));
        let r = std::panic::catch_unwind(unwrap_none);
        std::panic::set_hook(hook);
        assert!(r.is_err());
    });
    assert_eq!(rx.recv().unwrap(), Some(UNWRAP_LINE));
    assert!(rows.named("unwrap_none")["error"]
        .as_str()
        .unwrap()
        .starts_with("panicked: called `Option::unwrap()`"));
}

#[test]
fn methods_do_not_capture_self() {
    let rows = rows_of(|| {
        let mut acc = Account::open(10);
        assert_eq!(acc.balance(), 10);
        assert_eq!(acc.deposit(5), 15);
        *acc.balance_ref() += 1;
        assert_eq!(acc.close("done"), "closed with 16 (done)");
    });
    assert_eq!(rows.named("Account::open")["input"], json!({"balance": 10}));
    // `self` is never logged: a method with no other parameter logs `{}`.
    let b = rows.named("balance");
    assert_eq!(b["input"], json!({}));
    assert_eq!(b["output"], json!(10));
    assert_eq!(rows.named("deposit")["input"], json!({"amount": 5}));
    assert_eq!(rows.named("deposit")["output"], json!(15));
    assert_eq!(rows.named("balance_ref")["output"], json!(15));
    assert_eq!(rows.named("close")["input"], json!({"reason": "done"}));
}

#[test]
fn closure_form_and_wrapped_function() {
    fn shout(s: String) -> String {
        s.to_uppercase()
    }
    let rows = rows_of(|| {
        let n = traced_sync(SpanArgs::new().name("closure"), |span| {
            span.log(Event::new().input("in").output("out")).unwrap();
            add(1, 1)
        });
        assert_eq!(n, 2);
        let shout = braintrust::wrap_traced(SpanArgs::new().name("shout"), shout);
        assert_eq!(shout("hey".into()), "HEY");
    });
    assert_eq!(rows.named("closure")["output"], "out");
    assert_eq!(rows.parent_of("add")["span_attributes"]["name"], "closure");
    assert_eq!(rows.named("shout")["input"], "hey");
    assert_eq!(rows.named("shout")["output"], "HEY");
}

/// A function without parameters logs input `{}`, as the Python SDK does.
#[test]
fn function_without_parameters_logs_empty_input() {
    let rows = rows_of(|| {
        located();
    });
    assert_eq!(rows.named("located")["input"], json!({}));
}
