#[braintrust::traced(skip(secret))]
fn f(password: &str, user: &str) {}

#[braintrust::traced(input(self))]
fn g(a: u8) {}

fn main() {}
