//! Free functions of every shape.
#![deny(warnings)]

use braintrust::traced;
use serde::Serialize;
use std::fmt::{Debug, Display};

#[traced]
fn unit() {}

#[traced]
fn plain(a: i32, b: &str, c: &mut Vec<u8>) -> usize {
    c.push(1);
    a as usize + b.len()
}

#[traced]
fn returns_reference<'a>(s: &'a str, _other: &str) -> &'a str {
    &s[1..]
}

#[traced]
fn generic_bounds<T: Serialize + Clone, U: Debug>(t: T, u: U) -> T {
    let _ = format!("{u:?}");
    t.clone()
}

#[traced]
fn generic_where<T, U>(t: T, u: U) -> String
where
    T: Display,
    U: IntoIterator<Item = T>,
{
    let rest: Vec<String> = u.into_iter().map(|x| x.to_string()).collect();
    format!("{t} {}", rest.join(","))
}

#[traced]
fn unbounded<T>(t: T) -> T {
    t
}

#[traced]
fn impl_trait_arg(items: impl IntoIterator<Item = u32>, f: impl Fn(u32) -> u32) -> u32 {
    items.into_iter().map(f).sum()
}

#[traced]
fn impl_trait_return(n: u32) -> impl Iterator<Item = u32> + Clone {
    (0..n).map(|x| x * 2)
}

#[traced]
fn boxed_dyn(n: u32) -> Box<dyn Fn(u32) -> u32> {
    Box::new(move |x| x + n)
}

#[traced]
fn patterns(
    (a, b): (i32, i32),
    [c, _]: [u8; 2],
    Wrapper(d): Wrapper,
    Point { x, y: _ }: Point,
    _: u8,
) -> i32 {
    a + b + c as i32 + d + x
}

struct Wrapper(i32);
#[derive(Debug)]
struct Point {
    x: i32,
    y: i32,
}

#[traced]
fn mutable_args(mut n: u32, ref r: String) -> u32 {
    n += r.len() as u32;
    n
}

#[traced]
fn raw_idents(r#type: &str, r#match: u8) -> String {
    format!("{type}{match}", type = r#type, match = r#match)
}

#[traced]
fn question_mark(s: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = s.trim().parse()?;
    Ok(n + 1)
}

#[traced]
fn anyhow_like(s: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Ok(s.parse::<u32>()?)
}

#[traced]
fn early_return(n: i32) -> Option<i32> {
    if n < 0 {
        return None;
    }
    Some(n)
}

#[traced]
fn never(code: i32) -> ! {
    std::process::exit(code)
}

#[traced]
fn never_panics(msg: &str) -> ! {
    panic!("{msg}")
}

/// # Safety
/// `p` must be valid.
#[traced]
unsafe fn unsafe_fn(p: *const u32) -> u32 {
    unsafe { *p }
}

/// # Safety
/// `p` must be valid. (The body of an `unsafe fn` is an unsafe context in
/// edition 2021; the traced body keeps it.)
#[traced]
#[allow(unsafe_op_in_unsafe_fn)]
unsafe fn unsafe_fn_without_block(p: *const u32) -> u32 {
    *p
}

#[traced]
extern "C" fn extern_c(x: u32) -> u32 {
    x + 1
}

#[traced]
pub(crate) fn with_inner_attr(x: u32) -> u32 {
    #![allow(clippy::identity_op)]
    x + 0
}

#[traced]
#[inline]
#[must_use]
fn other_attributes(x: u32) -> u32 {
    x
}

#[traced]
fn local_items(x: u32) -> u32 {
    fn helper(y: u32) -> u32 {
        y * 3
    }
    const K: u32 = 2;
    helper(x) + K
}

#[traced]
fn closures_inside(v: Vec<u32>) -> u32 {
    let total: u32 = v.iter().map(|x| x + 1).sum();
    let f = move || total;
    f()
}

#[traced(type = "llm", name = "Custom LLM")]
fn llm(prompt: &str) -> String {
    prompt.to_string()
}
#[traced(type = "score")]
fn t_score() {}
#[traced(type = "function")]
fn t_function() {}
#[traced(type = "eval")]
fn t_eval() {}
#[traced(type = "task")]
fn t_task() {}
#[traced(type = "tool")]
fn t_tool() {}
#[traced(type = "automation")]
fn t_automation() {}
#[traced(type = "facet")]
fn t_facet() {}
#[traced(type = "preprocessor")]
fn t_preprocessor() {}
#[traced(type = "classifier")]
fn t_classifier() {}
#[traced(type = "review")]
fn t_review() {}
#[traced(type = "decision")]
fn t_decision() {}
#[traced(type = "question")]
fn t_question() {}
#[traced(type = "log")]
fn t_log() {}

#[traced(skip(secret), no_output)]
fn opts_a(secret: &str, public: &str) -> String {
    format!("{secret}{public}")
}
#[traced(skip_all)]
fn opts_b(secret: &str) -> usize {
    secret.len()
}
#[traced(notrace_io)]
fn opts_c(secret: &str) -> usize {
    secret.len()
}
#[traced(input(public), metadata = serde_json::json!({"len": public.len()}),)]
fn opts_d(secret: &str, public: &str) -> usize {
    secret.len() + public.len()
}
#[derive(Serialize)]
struct Meta {
    region: &'static str,
}
#[traced(metadata = Meta { region: "eu" })]
fn opts_e() {}

fn main() {
    unit();
    let mut v = Vec::new();
    plain(1, "a", &mut v);
    let _ = returns_reference("abc", "d");
    generic_bounds(1u8, "x");
    generic_where(1, vec![2, 3]);
    unbounded(Point { x: 1, y: 2 });
    impl_trait_arg(vec![1, 2], |x| x + 1);
    let _ = impl_trait_return(3).clone().count();
    boxed_dyn(1)(2);
    patterns((1, 2), [3, 4], Wrapper(5), Point { x: 6, y: 7 }, 8);
    mutable_args(1, String::from("ab"));
    raw_idents("a", 1);
    let _ = question_mark("1");
    let _ = anyhow_like("1");
    early_return(-1);
    let x = 5;
    let _ = unsafe { unsafe_fn(&x) };
    let _ = unsafe { unsafe_fn_without_block(&x) };
    extern_c(1);
    with_inner_attr(1);
    let _ = other_attributes(1);
    local_items(1);
    closures_inside(vec![1]);
    llm("p");
    t_score();
    t_function();
    t_eval();
    t_task();
    t_tool();
    t_automation();
    t_facet();
    t_preprocessor();
    t_classifier();
    t_review();
    t_decision();
    t_question();
    t_log();
    opts_a("s", "p");
    opts_b("s");
    opts_c("s");
    opts_d("s", "p");
    opts_e();
    let _: fn(i32) -> ! = never;
    let _: fn(&str) -> ! = never_panics;
}
