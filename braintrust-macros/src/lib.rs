//! `#[traced]`: trace a function into Braintrust.
//!
//! Use it through the facade crate (`use braintrust::traced;`); the code it
//! generates calls only `::braintrust::...` (or the `crate = "..."` path). This crate parses (`attr`) and
//! generates (`expand`); everything that happens at run time lives in
//! `braintrust_core::traced`, where it is tested as ordinary code.
//!
//! See [`macro@traced`] for the forms and what is logged.

#![warn(missing_docs)]

use proc_macro::TokenStream;

mod attr;
mod expand;

/// Traces every call of a function as a span.
///
/// Each call starts a span under the current span (or as a root of the
/// current logger), makes it current for the body, so traced functions
/// called from it become its children, and ends it when the function
/// returns. With no logger initialized the call costs one check and the body
/// runs as written: nothing is captured, moved, cloned or allocated.
///
/// # What is logged
///
/// - `span_attributes.name`: the function's name, or `name = "..."`.
/// - `span_attributes.type`: `"function"`, or `type = "..."`, the wire name
///   of a `braintrust::SpanType` (`llm`, `score`, `tool`, ...;
///   `SpanType::ALL` lists them). Anything else is a compile
///   error at the string: "evaluation panicked: unknown span type "model";
///   expected one of: llm, score, ...".
/// - `input`: `{arg_name: value}` for every argument but `self` (`{}` when
///   there is none, as the Python SDK logs it). Values
///   that implement `serde::Serialize` are serialized, others are logged as
///   their `Debug` text, others as `"<unserializable TYPE>"`. No bound is
///   needed on your types. In a generic function this follows the bounds
///   you declare (`T: Serialize` is serialized; an unbounded `T` gets the
///   placeholder). Pattern arguments log each name they bind.
/// - `output`: the return value, captured the same way. A `Result` logs
///   `Ok(v)` as `output = v` and `Err(e)` as `error` (for a
///   `std::error::Error`, its `Display` and its `source()` chain; for
///   `anyhow::Error` and `Box<dyn Error>`, the same; otherwise `Display` or
///   `Debug`), and the `Err` is returned unchanged. `None` is a normal
///   output (`null`). With the `axum` feature of `braintrust` (on with
///   `tower`), `axum::Json<T>`, `Result<Json<T>, E>` and
///   `(StatusCode, Json<T>)` log the inner `T` as JSON, not `Json`'s `Debug`
///   text. For any other wrapper, say what to log with `output = ...`.
/// - `error` on panic: `"panicked: <message>"`; the span ends and the panic
///   keeps unwinding unchanged.
/// - `context.caller_filename`, `caller_lineno`: where the function was
///   *called*, as the Python SDK records them (the UI's "go to code" opens
///   the call site). The function becomes `#[track_caller]`; its body runs in
///   a closure or async block, so panics and `#[track_caller]` calls in the
///   body still report their own lines. Where the attribute cannot go
///   (`fn main`, a non-Rust ABI, an `async fn` kept as one, see below) the
///   location is the function's definition. `caller_functionname` is not
///   written: Python records the caller's function there, which Rust cannot
///   know (the span's name is the traced function's).
///
/// # Forms
///
/// ```
/// use braintrust::traced;
///
/// // name = "add", type = "function", input = {"a": 1, "b": 2}, output = 3
/// #[traced]
/// fn add(a: i32, b: i32) -> i32 {
///     a + b
/// }
///
/// // A custom name and span type.
/// #[traced(type = "llm", name = "Custom LLM")]
/// fn complete(prompt: &str) -> String {
///     format!("echo: {prompt}")
/// }
///
/// assert_eq!(add(1, 2), 3);
/// assert_eq!(complete("hi"), "echo: hi");
/// ```
///
/// Choosing what is logged:
///
/// ```
/// use braintrust::traced;
/// use serde_json::json;
/// # struct Client;
///
/// // input = {"question": ...}: `client` and `api_key` are left out.
/// #[traced(skip(client, api_key))]
/// fn ask(client: &Client, api_key: &str, question: &str) -> usize { question.len() }
///
/// // input = {"question": ...}: only the arguments listed.
/// #[traced(input(question))]
/// fn ask_again(client: &Client, api_key: &str, question: &str) -> usize { question.len() }
///
/// // No input at all.
/// #[traced(skip_all)]
/// fn login(user: &str, password: &str) -> bool { !user.is_empty() && !password.is_empty() }
///
/// // The return value is not logged (an `Err` is still logged as `error`).
/// #[traced(no_output)]
/// fn fetch_secret(name: &str) -> Result<String, std::io::Error> { Ok(format!("secret-{name}")) }
///
/// // Neither input nor output, as the Python SDK's `notrace_io`.
/// #[traced(notrace_io)]
/// fn handle(body: Vec<u8>) -> Vec<u8> { body }
///
/// // Metadata: any `Serialize` value that serializes to a JSON object,
/// // evaluated (only when tracing is on) with the arguments in scope.
/// #[traced(metadata = json!({"model": model, "temperature": 0.1}))]
/// fn generate(model: &str, prompt: &str) -> String { format!("{model}: {prompt}") }
///
/// // What to log as output: a one-argument closure or a function, given a
/// // reference to the return value (for a `Result`, to the `Ok` value; an
/// // `Err` is still the span's `error`). It may borrow from it; the result
/// // is captured as any value is. Evaluated only when tracing is on.
/// struct Page { html: String, words: Vec<String> }
/// #[traced(output = |page| &page.words)]
/// fn render(q: &str) -> Page { Page { html: format!("<p>{q}</p>"), words: vec![q.into()] } }
///
/// # let c = Client;
/// # ask(&c, "k", "q"); ask_again(&c, "k", "q"); login("u", "p");
/// # fetch_secret("x").unwrap(); handle(vec![1]); generate("m", "p"); render("q").html.len();
/// ```
///
/// # `async fn` and futures
///
/// The span is current across every `.await` of the body. The span's parent
/// is the span current at the first poll, or, if none is current then, the
/// one current where the function was *called*: `tokio::spawn(f(x))` inside
/// a span nests (an `async fn` becomes the `fn(..) -> impl Future` it
/// desugars to, with the same captures; `async unsafe fn` and functions with
/// another attribute macro below `#[traced]` stay `async fn` and take the
/// parent at the first poll). A future dropped
/// before it completes (by `tokio::select!`, a timeout, an aborted task)
/// ends its span with `error = "cancelled"`.
///
/// A sync function is traced as returning a future (the span runs until
/// the future completes and logs its output) when the macro can see it, from
/// the tokens alone (it cannot see types), by these rules, in order:
///
/// 1. the body's last expression is an `async` block, or `Box::pin(async ...)`
///    (as `#[async_trait]` generates), whatever the return type says;
/// 2. the return type is `impl ... Future<..>` (a bound whose last path
///    segment is `Future`, e.g. `impl std::future::Future<Output = T> + Send`);
/// 3. the return type is `Pin<Box<dyn Future<..> ..>>`, or `BoxFuture<'a, T>`
///    or `LocalBoxFuture<'a, T>` (the `futures` aliases, matched by their
///    last path segment); the traced future is boxed again, only when
///    tracing is on.
///
/// Anything else is a sync function whose return value is logged as it is:
/// a future behind your own type alias or struct ends its span when the
/// function returns, and is logged as `"<unserializable ...>"`. To trace
/// the future then, end the body with `async move { inner.await }` (or
/// `Box::pin(async move { inner.await })`), or spell the return type as one
/// of the forms above. A type that is not a future but matches rule 3 by
/// name (your own `BoxFuture<T>`) is a compile error at the macro (it needs
/// `Future`): import it under another name.
///
/// ```
/// use braintrust::{current_span, traced, Event};
///
/// #[traced(type = "tool")]
/// async fn lookup(id: u64) -> Option<String> {
///     tokio::task::yield_now().await;
///     // The span is still current after the await.
///     current_span().log(Event::new().metadata(serde_json::json!({"cache": "miss"}))).unwrap();
///     (id == 1).then(|| "one".to_string())
/// }
///
/// #[traced]
/// fn lookup_later(id: u64) -> impl std::future::Future<Output = u64> {
///     async move { id * 2 }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(lookup(2).await, None);
/// assert_eq!(lookup_later(2).await, 4);
/// # });
/// ```
///
/// # Methods and errors
///
/// `self` is never captured. Errors are returned unchanged.
///
/// ```
/// use braintrust::traced;
///
/// #[derive(Debug)]
/// struct ParseError(std::num::ParseIntError);
/// impl std::fmt::Display for ParseError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("could not parse the count")
///     }
/// }
/// impl std::error::Error for ParseError {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&self.0) }
/// }
///
/// struct Counter { total: u64 }
///
/// impl Counter {
///     // error = "could not parse the count\n\nCaused by:\n    0: invalid digit found in string"
///     #[traced]
///     fn add(&mut self, text: &str) -> Result<u64, ParseError> {
///         self.total += text.parse::<u64>().map_err(ParseError)?;
///         Ok(self.total)
///     }
/// }
///
/// let mut c = Counter { total: 0 };
/// assert_eq!(c.add("2").unwrap(), 2);
/// assert!(c.add("x").is_err());
/// ```
///
/// # A renamed dependency
///
/// The generated code names the crate `::braintrust`. If your Cargo.toml
/// renames it (`my_bt = { package = "braintrust", ... }`), or you use it
/// through a crate that re-exports it, say where it is with
/// `crate = "path"` (as serde's `#[serde(crate = "...")]`):
///
/// ```
/// # extern crate braintrust as my_bt;
/// use my_bt::traced;
///
/// #[traced(crate = "my_bt")]
/// fn add(a: i32, b: i32) -> i32 {
///     a + b
/// }
/// # assert_eq!(add(1, 2), 3);
/// ```
///
/// # Mistakes are compile errors
///
/// ```compile_fail
/// #[braintrust::traced(type = "model")] // unknown span type "model"; expected one of: llm, ...
/// fn f() {}
/// ```
///
/// ```compile_fail
/// #[braintrust::traced(skip(secret))] // no parameter named `secret`
/// fn f(password: &str) {}
/// ```
///
/// Also rejected: unknown or repeated options, `skip_all` with `skip`,
/// `input` with `skip`/`skip_all`, `notrace_io` with any of them or with
/// `no_output`, `output = ...` with `no_output`/`notrace_io`, an `output`
/// closure without exactly one argument, a `name`, `type` or `crate` that is
/// not a string literal, a `crate` string that is not a path, `const fn`,
/// and items that are not functions.
///
/// # Without the macro
///
/// The same behaviour is available as functions: `braintrust::traced(args,
/// |span| ...)`, `braintrust::traced_async(args, |span| async move { ... })`,
/// and `braintrust::wrap_traced(args, f)` to wrap an existing function value.
#[proc_macro_attribute]
pub fn traced(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match syn::parse::<attr::TracedArgs>(args) {
        Ok(args) => expand::traced(args, item).into(),
        // Keep the function so the mistake causes no follow-on errors.
        Err(e) => expand::with_error(item, e).into(),
    }
}
