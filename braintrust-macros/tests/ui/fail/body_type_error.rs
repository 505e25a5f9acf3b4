#[braintrust::traced]
fn count(items: &[u32]) -> u32 {
    let total: usize = items.len();
    total
}

#[braintrust::traced]
async fn name(id: u32) -> String {
    id
}

#[braintrust::traced]
fn early(x: u32) -> Option<u32> {
    if x > 1 {
        return x;
    }
    None
}

fn main() {}
