//! Inline base64 `data:` URLs in chat messages are logged as attachments:
//! the row carries references, the bytes are uploaded to the local server,
//! and the model still receives the original request.

mod common;

use base64::Engine as _;
use braintrust_core::{AttachmentReference, UploadStatus, WithSpan};
use braintrust_openai::{image_url_part, text_part, ChatCompletionRequest, ChatMessage};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn data_urls_in_messages_become_uploaded_attachments() {
    let env = setup().await;
    let png: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let messages = vec![ChatMessage::user(vec![
        text_part("What is in these images?"),
        image_url_part(data_url.as_str()),
        image_url_part("https://example.com/cat.png"),
    ])];
    let root = env.root("request");
    env.client
        .chat()
        .create(ChatCompletionRequest::new("gpt-4o-mini", messages))
        .in_span(root.clone())
        .await
        .unwrap();
    root.end();

    let rows = env.trace(&root).await;
    let row = Env::named(&rows, "Chat Completion");
    let parts = &row["input"][0]["content"];
    let reference = AttachmentReference::from_value(&parts[1]["image_url"]["url"])
        .unwrap_or_else(|| panic!("no reference in {parts:#}"));
    assert_eq!(
        (reference.filename(), reference.content_type()),
        ("image.png", "image/png")
    );
    assert_eq!(parts[2]["image_url"]["url"], "https://example.com/cat.png");
    assert!(!row.to_string().contains("base64,"), "{row:#}");

    // The model got the data URL itself.
    assert_eq!(
        env.mock.requests()[0].body["messages"][0]["content"][1]["image_url"]["url"],
        data_url.as_str()
    );
    // The bytes arrived intact.
    let state = env.logger.state().clone();
    let stored = tokio::task::spawn_blocking(move || state.read_attachment(&reference))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, UploadStatus::Done);
    assert_eq!(stored.data, Some(png));
}
