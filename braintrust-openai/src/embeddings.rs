//! Embeddings (`POST /embeddings`) and their span (spec §9.2): the vectors
//! are not logged, only their length.

use std::future::Future;
use std::panic::Location;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::OpenAiClient;
use crate::error::OpenAiError;
use crate::spans;
use crate::types::Usage;

/// What to embed: one text, several, or token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts (one vector each).
    Texts(Vec<String>),
    /// One token array.
    Tokens(Vec<u32>),
    /// Several token arrays.
    TokenBatches(Vec<Vec<u32>>),
}

impl From<&str> for EmbeddingInput {
    fn from(s: &str) -> Self {
        EmbeddingInput::Text(s.to_string())
    }
}
impl From<String> for EmbeddingInput {
    fn from(s: String) -> Self {
        EmbeddingInput::Text(s)
    }
}
impl From<Vec<String>> for EmbeddingInput {
    fn from(v: Vec<String>) -> Self {
        EmbeddingInput::Texts(v)
    }
}
impl From<Vec<&str>> for EmbeddingInput {
    fn from(v: Vec<&str>) -> Self {
        EmbeddingInput::Texts(v.into_iter().map(str::to_string).collect())
    }
}

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The model, e.g. `"text-embedding-3-small"`.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// Output dimensions (models that support it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// `"float"` (default) or `"base64"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Parameters this crate has no field for.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingRequest {
    /// A request embedding `input` with `model`.
    pub fn new(model: impl Into<String>, input: impl Into<EmbeddingInput>) -> Self {
        EmbeddingRequest {
            model: model.into(),
            input: input.into(),
            dimensions: None,
            encoding_format: None,
            user: None,
            extra: Map::new(),
        }
    }
    /// Sets `dimensions`.
    pub fn dimensions(mut self, n: u32) -> Self {
        self.dimensions = Some(n);
        self
    }
    /// Sets `encoding_format`.
    pub fn encoding_format(mut self, f: impl Into<String>) -> Self {
        self.encoding_format = Some(f.into());
        self
    }
}

/// One vector: floats, or base64 little-endian `f32`s with `encoding_format: "base64"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// Plain floats.
    Float(Vec<f32>),
    /// Base64 of little-endian `f32`s.
    Base64(String),
}

impl Default for EmbeddingVector {
    fn default() -> Self {
        EmbeddingVector::Float(Vec::new())
    }
}

impl EmbeddingVector {
    /// The floats, decoding base64 if needed (invalid base64 gives an empty vector).
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            EmbeddingVector::Float(v) => v.clone(),
            EmbeddingVector::Base64(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(|b| {
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
    /// The number of dimensions.
    pub fn len(&self) -> usize {
        match self {
            EmbeddingVector::Float(v) => v.len(),
            EmbeddingVector::Base64(s) => base64_len(s) / 4,
        }
    }
    /// True for an empty vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn base64_len(s: &str) -> usize {
    let s = s.trim_end_matches('=');
    s.len() * 3 / 4
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Embedding {
    /// Position in the input.
    #[serde(default)]
    pub index: u32,
    /// The vector.
    #[serde(default)]
    pub embedding: EmbeddingVector,
    /// `"embedding"`.
    #[serde(default)]
    pub object: String,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An embeddings response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// `"list"`.
    #[serde(default)]
    pub object: String,
    /// One embedding per input.
    #[serde(default)]
    pub data: Vec<Embedding>,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Fields this crate does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Embeddings. Get one with [`OpenAiClient::embeddings`].
#[derive(Debug, Clone, Copy)]
pub struct Embeddings<'a> {
    pub(crate) client: &'a OpenAiClient,
}

impl Embeddings<'_> {
    /// Creates embeddings. Traced as an `Embedding` `llm` span: `input` = the
    /// request input, `metadata` = the other parameters plus `provider`,
    /// `output` = `{"embedding_length": n}` (the vector is not logged),
    /// metrics = token usage.
    #[track_caller]
    pub fn create(
        &self,
        request: EmbeddingRequest,
    ) -> impl Future<Output = Result<EmbeddingResponse, OpenAiError>> + Send + 'static {
        let client = self.client.clone();
        let caller = Location::caller();
        async move { create(client, request, caller).await }
    }
}

const PATH: &str = "embeddings";

async fn create(
    client: OpenAiClient,
    request: EmbeddingRequest,
    caller: &'static Location<'static>,
) -> Result<EmbeddingResponse, OpenAiError> {
    let inner = &client.inner;
    if !client.traced() {
        let body = inner.post_json(PATH, &request).await?;
        return serde_json::from_slice(&body).map_err(|e| OpenAiError::decode(e, &body));
    }
    let body = serde_json::to_value(&request).map_err(|e| OpenAiError::decode(e, b""))?;
    drop(request);
    let trace = spans::embeddings_start(&body, caller);
    let result = async {
        let bytes = inner.post_json(PATH, &body).await?;
        serde_json::from_slice::<EmbeddingResponse>(&bytes)
            .map_err(|e| OpenAiError::decode(e, &bytes))
    }
    .await;
    match result {
        Ok(resp) => {
            let usage = resp
                .usage
                .as_ref()
                .and_then(|u| serde_json::to_value(u).ok());
            let len = resp.data.first().map_or(0, |d| d.embedding.len());
            spans::embeddings_end(trace, Ok((usage, len)));
            Ok(resp)
        }
        Err(e) => {
            spans::embeddings_end(trace, Err(&e));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_vectors() {
        let floats = [0.5f32, -1.0, 2.25];
        let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        let v = EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes));
        assert_eq!(v.len(), 3);
        assert_eq!(v.to_vec(), floats);
        let parsed: EmbeddingVector = serde_json::from_value(json!([0.1, 0.2])).unwrap();
        assert_eq!(parsed.len(), 2);
    }
}
