#[braintrust::traced(input(a))]
fn f() {}

fn main() {}
