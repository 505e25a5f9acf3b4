//! Performance benchmarks of the Braintrust Rust SDK (issue 9).
//!
//! - [`sink`]: a fast loopback HTTP sink that counts distinct row ids.
//! - [`workload`]: the fixed workload (trees of depth 3, `l1` → `l2` → `l3`,
//!   each span logging input `{"i": i}` and output `{"ok": i}`), with manual
//!   spans and with three nested `#[traced]` functions, and the disabled
//!   overhead probes.
//! - [`machine`]: what the report says about the machine and the process.
//! - [`alloc_count`]: the counting allocator behind "allocations per span".
//!
//! The `braintrust-bench` binary runs it all and prints one JSON line; the
//! criterion benches live in `benches/`.

pub mod alloc_count;
pub mod machine;
pub mod sink;
pub mod workload;
