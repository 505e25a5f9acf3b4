#[braintrust::traced(name = my_name)]
fn f() {}

#[braintrust::traced(name = 42)]
fn g() {}

fn main() {}
