#[braintrust::traced(skip_all, skip(a))]
fn f(a: u8) -> u8 {
    a
}

#[braintrust::traced(skip(a), input(a))]
fn g(a: u8) -> u8 {
    a
}

#[braintrust::traced(notrace_io, no_output)]
fn h(a: u8) -> u8 {
    a
}

fn main() {}
