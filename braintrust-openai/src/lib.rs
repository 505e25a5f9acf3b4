//! braintrust-openai
