//! braintrust-macros
