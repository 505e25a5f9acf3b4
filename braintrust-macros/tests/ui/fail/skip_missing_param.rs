#[braintrust::traced(skip(secret))]
fn f(password: &str, user: &str) -> usize {
    password.len() + user.len()
}

#[braintrust::traced(input(self))]
fn g(a: u8) -> u8 {
    a
}

fn main() {}
