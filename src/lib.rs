//! # braintrust
//!
//! Trace a Rust application into [Braintrust](https://www.braintrust.dev):
//! annotate functions with `#[traced]`, start spans by hand, nest them
//! without passing spans around, and let a background logger deliver them.
//!
//! ```no_run
//! use braintrust::{init_logger, LoggerOptions, SpanArgs, Event};
//! use serde_json::json;
//!
//! let logger = init_logger(LoggerOptions::new().project("My Project"))?;
//! let root = logger.start_span(SpanArgs::new().name("handle_request"));
//! root.log(Event::new().input(json!({"q": "What is 1+1?"})))?;
//! root.end();
//! braintrust::flush()?;
//! # Ok::<(), braintrust::Error>(())
//! ```

pub use braintrust_core::*;
