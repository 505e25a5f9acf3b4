#[braintrust::traced(name = "a", name = "b")]
fn f() {}

#[braintrust::traced(no_output, no_output)]
fn g() {}

fn main() {}
