//! Runtime support for `#[traced]` and the closure forms `traced(...)`.
