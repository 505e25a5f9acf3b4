#[braintrust::traced(level = "info")]
fn f() {}

fn main() {}
