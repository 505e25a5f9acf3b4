#[braintrust::traced(skip_all, skip(a))]
fn f(a: u8) {}

#[braintrust::traced(skip(a), input(a))]
fn g(a: u8) {}

#[braintrust::traced(notrace_io, no_output)]
fn h(a: u8) {}

fn main() {}
