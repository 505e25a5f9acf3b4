#[braintrust::traced(name = "")]
fn f() {}

fn main() {}
