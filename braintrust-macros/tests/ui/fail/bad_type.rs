#[braintrust::traced(type = "model")]
fn f() {}

#[braintrust::traced(type = llm)]
fn g() {}

fn main() {}
