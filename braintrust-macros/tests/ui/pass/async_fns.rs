//! `async fn`, async methods, futures returned from sync functions,
//! `#[async_trait]` and native async fn in traits.
#![deny(warnings)]

use braintrust::traced;
use std::future::Future;
use std::pin::Pin;

#[traced]
async fn plain(a: u32, b: &str) -> usize {
    tokio::task::yield_now().await;
    a as usize + b.len()
}

#[traced]
async fn unit_async() {}

#[traced]
async fn question_mark(s: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = s.parse()?;
    tokio::task::yield_now().await;
    Ok(n)
}

#[traced]
async fn boxed_error(s: String) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Ok(s.parse::<u32>()?)
}

#[traced]
async fn returns_reference<'a>(s: &'a str) -> &'a str {
    &s[1..]
}

#[traced]
async fn generic<T: serde::Serialize + Send, U>(t: T, u: U) -> (T, U) {
    (t, u)
}

#[traced]
async fn impl_trait_arg(f: impl Fn(u32) -> u32 + Send) -> u32 {
    f(1)
}

#[traced]
async fn async_impl_return(n: u32) -> impl std::fmt::Display {
    n
}

#[traced]
async fn recursive_box(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        Box::pin(recursive_box(n - 1)).await + 1
    }
}

#[traced]
fn returns_async_block(x: u32) -> impl Future<Output = u32> {
    let y = x + 1;
    async move { y * 2 }
}

#[traced]
fn returns_non_move_async_block() -> impl Future<Output = u32> {
    async { 7 }
}

#[traced]
fn returns_impl_future(x: u32) -> impl Future<Output = u32> + Send + 'static {
    std::future::ready(x)
}

#[traced]
fn returns_boxed_future(x: u32) -> Pin<Box<dyn Future<Output = u32> + Send>> {
    Box::pin(async move { x })
}

struct Service {
    prefix: String,
}

impl Service {
    #[traced]
    async fn call(&self, q: &str) -> String {
        format!("{}{q}", self.prefix)
    }

    #[traced]
    async fn call_mut(&mut self, q: &str) -> &str {
        self.prefix.push_str(q);
        &self.prefix
    }

    #[traced]
    async fn consume(self) -> String {
        self.prefix
    }

    #[traced]
    async fn associated(n: u32) -> u32 {
        n
    }
}

#[async_trait::async_trait]
trait Store {
    async fn get(&self, key: &str) -> Option<String>;
    async fn put(&mut self, key: String, value: String) -> Result<(), String>;
}

#[derive(Default)]
struct Mem(Vec<(String, String)>);

#[async_trait::async_trait]
impl Store for Mem {
    #[traced]
    async fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    #[traced(skip(value))]
    async fn put(&mut self, key: String, value: String) -> Result<(), String> {
        if key.is_empty() {
            return Err("empty key".into());
        }
        self.0.push((key, value));
        Ok(())
    }
}

trait Native {
    async fn run(&self, n: u32) -> u32;
}

impl Native for Service {
    #[traced]
    async fn run(&self, n: u32) -> u32 {
        n + self.prefix.len() as u32
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_send(plain(1, "a")).await;
        unit_async().await;
        let _ = question_mark("1").await;
        let _ = assert_send(boxed_error("1".into())).await;
        let _ = returns_reference("ab").await;
        let _ = generic(1, vec![2]).await;
        impl_trait_arg(|x| x + 1).await;
        let _ = async_impl_return(1).await.to_string();
        recursive_box(3).await;
        assert_send(returns_async_block(1)).await;
        returns_non_move_async_block().await;
        assert_send(returns_impl_future(1)).await;
        returns_boxed_future(1).await;
        let mut s = Service { prefix: "p".into() };
        assert_send(s.call("q")).await;
        let _ = s.call_mut("r").await;
        s.run(1).await;
        Service::associated(1).await;
        let _ = s.consume().await;
        let mut m = Mem::default();
        let _ = assert_send(m.put("k".into(), "v".into())).await;
        let _ = m.get("k").await;
    });
}
