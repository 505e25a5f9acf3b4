#[braintrust::traced(crate = my_bt)]
fn a() {}

#[braintrust::traced(crate = "my bt")]
fn b() {}

#[braintrust::traced(crate = "")]
fn c() {}

#[braintrust::traced(crate = "braintrust", crate = "braintrust")]
fn d() {}

#[braintrust::traced(crate = "Vec<u8>")]
fn e() {}

fn main() {}
