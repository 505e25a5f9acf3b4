// A path that names no crate: the compiler's errors point at the string.
#[braintrust::traced(crate = "no_such_crate")]
fn f() {}

fn main() {}
