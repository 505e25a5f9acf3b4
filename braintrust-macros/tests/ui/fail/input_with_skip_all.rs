#[braintrust::traced(skip_all, input(a))]
fn f(a: u32) -> u32 {
    a
}

fn main() {}
