#[braintrust::traced(output = |r| r.0, no_output)]
fn f() -> (u8,) {
    (1,)
}

#[braintrust::traced(notrace_io, output = |r| r.0)]
fn g() -> (u8,) {
    (1,)
}

#[braintrust::traced(output = |a, b| a)]
fn h() -> u8 {
    1
}

#[braintrust::traced(output = |r| r, output = |r| r)]
fn i() -> u8 {
    1
}

fn main() {}
