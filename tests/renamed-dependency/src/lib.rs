//! Traced functions of every shape `#[traced]` generates differently, with
//! the `braintrust` crate renamed to `my_bt` (see Cargo.toml).

use std::future::Future;

use my_bt::traced;

/// Sync, with a span type (checked against `my_bt::SpanType`).
#[traced(crate = "my_bt", type = "llm", metadata = model_metadata())]
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

fn model_metadata() -> std::collections::BTreeMap<&'static str, &'static str> {
    [("model", "adder")].into()
}

/// No parameters; an `Err` is logged as `error`.
#[traced(crate = "my_bt")]
pub fn fail() -> Result<u8, std::fmt::Error> {
    Err(std::fmt::Error)
}

/// `output = ...`.
#[traced(crate = "my_bt", output = |v| v.len())]
pub fn words(text: &str) -> Vec<&str> {
    text.split(' ').collect()
}

/// `async fn`, rewritten to take its parent at the call.
#[traced(crate = "::my_bt")]
pub async fn double(x: u64) -> u64 {
    x * 2
}

/// `async unsafe fn`, kept as `async fn`.
///
/// # Safety
///
/// None needed; `unsafe` only selects the other expansion.
#[traced(crate = "my_bt")]
pub async unsafe fn triple(x: u64) -> u64 {
    x * 3
}

/// A sync function returning an `async` block.
#[traced(crate = "my_bt")]
#[allow(clippy::manual_async_fn)]
pub fn later(x: u64) -> impl Future<Output = u64> {
    async move { x + 1 }
}

/// A sync function returning `Box::pin(async ...)`.
#[traced(crate = "my_bt")]
pub fn boxed(x: u64) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> {
    Box::pin(async move { x + 2 })
}

/// A sync function returning an `impl Future` that is not an `async` block.
#[traced(crate = "my_bt")]
pub fn ready(x: u64) -> impl Future<Output = u64> {
    std::future::ready(x + 3)
}

/// `-> !`.
#[traced(crate = "my_bt")]
pub fn never(message: &str) -> ! {
    panic!("{message}")
}
