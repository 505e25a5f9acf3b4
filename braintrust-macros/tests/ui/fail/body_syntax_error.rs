#[braintrust::traced]
fn broken(x: u32) -> u32 {
    let y = x +;
    y
}

fn main() {}
