//! Handler outputs: axum's `Json` wrappers (feature `axum`) and the
//! `output = ...` option for any other return type.
#![deny(warnings)]

use axum::http::StatusCode;
use axum::Json;
use braintrust::traced;
use serde::Serialize;

#[derive(Serialize)]
struct Answer {
    text: String,
}

#[traced]
async fn json() -> Json<Answer> {
    Json(Answer { text: "hi".into() })
}

#[traced]
async fn result_json() -> Result<Json<Answer>, StatusCode> {
    Ok(Json(Answer { text: "hi".into() }))
}

#[traced]
async fn with_status() -> (StatusCode, Json<Answer>) {
    (StatusCode::CREATED, Json(Answer { text: "hi".into() }))
}

struct Page {
    html: String,
    answer: Answer,
}

// A closure: gets `&Page`, may borrow from it, its result is captured as
// any value is (Serialize, else Debug, else a placeholder).
#[traced(output = |page| &page.answer)]
fn page() -> Page {
    Page { html: "<p>hi</p>".into(), answer: Answer { text: "hi".into() } }
}

// With a type annotation and a pattern.
#[traced(output = |Page { html, .. }: &Page| html.len())]
async fn page_len() -> Page {
    page()
}

// A function path; for a `Result`, it maps the `Ok` value.
fn text(a: &Answer) -> &str {
    &a.text
}

#[traced(output = text)]
fn checked(ok: bool) -> Result<Answer, String> {
    if ok { Ok(Answer { text: "hi".into() }) } else { Err("no".into()) }
}

// Methods, with other options.
impl Page {
    #[traced(skip_all, output = |n| *n * 2)]
    fn size(&self) -> usize {
        self.html.len()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let _ = json().await;
        let _ = result_json().await.unwrap();
        let _ = with_status().await;
        page_len().await;
    });
    let p = page();
    let _ = (p.size(), p.answer.text.len());
    checked(true).unwrap();
}
