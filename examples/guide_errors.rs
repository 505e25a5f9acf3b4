//! "Errors" from the Customize traces guide. A traced function that returns
//! `Err` gets the error, with its `source()` chain, as the span's `error`; a
//! panic is recorded as `error` too and keeps unwinding. Every span also has
//! an `error` field you can log to directly.
//!
//! Run it with `cargo run --example guide_errors` (offline unless
//! `BRAINTRUST_API_KEY` is set; then it prints the stored trace tree).

use braintrust::{current_span, traced, Event, LoggerOptions};
use serde::Serialize;

/// An error with a cause: both end up in the span's `error`.
#[derive(Debug)]
struct ConfigError {
    path: String,
    source: std::num::ParseIntError,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid port in {}", self.path)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `Err` is logged as `error = "invalid port in app.toml\n\nCaused by:\n    0: ..."`
/// and returned unchanged.
#[traced]
fn load_port(path: &str, text: &str) -> Result<u16, ConfigError> {
    text.trim().parse().map_err(|source| ConfigError {
        path: path.into(),
        source,
    })
}

#[derive(Debug, Serialize)]
struct Reply {
    data: Option<&'static str>,
    error: Option<&'static str>,
}

fn process_request(input: &str) -> Reply {
    if input.len() > 10 {
        Reply {
            data: None,
            error: Some("Input too long"),
        }
    } else {
        Reply {
            data: Some("Hello, world!"),
            error: None,
        }
    }
}

/// Logging to the `error` field directly, as the guide's `requestHandler`.
#[traced(notrace_io)]
fn request_handler(body: &str) -> Reply {
    let result = process_request(body);
    let event = match (result.error, result.data) {
        (Some(error), _) => Event::new().error(error),
        (None, data) => Event::new().input(body).output(data),
    };
    current_span().log(event).expect("valid event");
    result
}

/// A panic marks the span with `error = "panicked: ..."`, then unwinds on.
#[traced]
fn divide(a: u32, b: u32) -> u32 {
    a / b
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Braintrust when `BRAINTRUST_API_KEY` is set, else a local server.
    let session =
        braintrust::local::init_logger_or_local(LoggerOptions::new().project("My Project"))?;

    println!("port: {:?}", load_port("app.toml", "8080"));
    println!("port: {:?}", load_port("app.toml", "80a"));
    println!("{:?}", request_handler("hi"));
    println!("{:?}", request_handler("this input is too long"));
    // The panic below is on purpose. The default hook would print
    // "thread 'main' panicked at ..." and a backtrace hint, which reads like a
    // crash: for this one call, a hook prints one line saying it was expected.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("non-string payload");
        eprintln!("(expected) divide(1, 0) panicked: {message}; its span records it as `error`");
    }));
    let caught = std::panic::catch_unwind(|| divide(1, 0));
    std::panic::set_hook(default_hook);
    println!("divide panicked: {}", caught.is_err());

    if let Some(tree) = session.traces()? {
        print!("{tree}");
    }
    Ok(())
}
