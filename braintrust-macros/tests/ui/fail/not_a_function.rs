#[braintrust::traced]
struct Config {
    name: String,
}

trait Tool {
    #[braintrust::traced]
    fn run(&self) -> u32;
}

fn main() {}
