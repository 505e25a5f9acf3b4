// Every mistake in one attribute is reported in one compile.
#[braintrust::traced(type = model, level = 1, name = 3, skip(nope))]
fn f(a: u8) -> u8 {
    a
}

fn main() {}
