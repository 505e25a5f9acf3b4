//! Compile-time behaviour of `#[traced]`: every function shape compiles
//! (`ui/pass`), every mistake is reported at the offending token (`ui/fail`,
//! with committed `.stderr`). One trybuild run, so one build.
//!
//! Regenerate the `.stderr` files after an intended change with
//! `TRYBUILD=overwrite cargo test -p braintrust-macros --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
