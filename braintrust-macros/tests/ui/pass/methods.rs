//! Methods, associated functions, trait impls and trait default methods.
#![deny(warnings)]

use braintrust::traced;
use std::fmt::Debug;

#[derive(Debug, Clone, Default)]
struct Counter {
    n: u64,
    name: String,
}

impl Counter {
    #[traced]
    fn new(name: &str) -> Self {
        Counter {
            n: 0,
            name: name.to_string(),
        }
    }

    #[traced]
    fn get(&self) -> u64 {
        self.n
    }

    #[traced]
    fn name(&self) -> &str {
        &self.name
    }

    #[traced]
    fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    #[traced]
    fn n_mut(&mut self) -> &mut u64 {
        &mut self.n
    }

    #[traced]
    fn into_name(self) -> String {
        self.name
    }

    #[traced]
    fn boxed(self: Box<Self>, extra: u64) -> u64 {
        self.n + extra
    }

    #[traced(skip(self))]
    fn skip_self_is_allowed(&self) -> u64 {
        self.n
    }

    #[traced]
    fn uses_self_type(other: Self) -> Self {
        other
    }
}

struct Wrapper<T>(T);

impl<T: Debug + Clone> Wrapper<T> {
    #[traced]
    fn inner(&self) -> T {
        self.0.clone()
    }

    #[traced]
    fn map<U, F: FnOnce(T) -> U>(self, f: F) -> Wrapper<U> {
        Wrapper(f(self.0))
    }
}

trait Shape {
    fn area(&self) -> f64;

    #[traced]
    fn describe(&self, unit: &str) -> String {
        format!("{} {unit}", self.area())
    }
}

struct Square(f64);

impl Shape for Square {
    #[traced]
    fn area(&self) -> f64 {
        self.0 * self.0
    }
}

impl std::fmt::Display for Square {
    #[traced]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Square({})", self.0)
    }
}

impl Iterator for Counter {
    type Item = u64;

    #[traced]
    fn next(&mut self) -> Option<u64> {
        self.n += 1;
        (self.n < 3).then_some(self.n)
    }
}

fn main() {
    let mut c = Counter::new("c");
    c.get();
    let _ = c.name();
    c.incr(2);
    *c.n_mut() += 1;
    c.skip_self_is_allowed();
    let _ = Counter::uses_self_type(c.clone());
    let _ = c.clone().into_name();
    Box::new(c.clone()).boxed(1);
    let _ = c.by_ref().count();
    let w = Wrapper(5u8);
    w.inner();
    let _ = w.map(|x| x.to_string());
    let s = Square(2.0);
    s.describe("m2");
    let _ = s.to_string();
}
