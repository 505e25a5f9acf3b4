//! Reporting SDK problems to the user: loudly on stderr, once per kind, and
//! never by panicking or failing the user's code.

use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Prints `message` on stderr the first time `key` is seen in this process.
/// Returns true if it printed.
pub(crate) fn warn_once(key: &str, message: &str) -> bool {
    let mut g = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = g.get_or_insert_with(HashSet::new);
    if set.insert(key.to_string()) {
        eprintln!("{message}");
        true
    } else {
        false
    }
}
