//! `examples/guide_errors.rs` demonstrates a panic in a traced function
//! without printing what reads like a crash.

use std::path::PathBuf;
use std::process::Command;

fn example_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "build the example first: cargo build --example {name} ({bin:?})"
    );
    bin
}

#[test]
fn the_expected_panic_is_one_quiet_line_and_still_recorded() {
    let out = Command::new(example_bin("guide_errors"))
        .env_remove("BRAINTRUST_API_KEY")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("(expected) divide(1, 0) panicked: attempt to divide by zero"),
        "{stderr}"
    );
    // No default hook output: no "thread 'main' panicked at", no backtrace.
    assert!(!stderr.contains("panicked at"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    assert!(stdout.contains("divide panicked: true"), "{stdout}");
    assert!(
        stdout.contains("panicked: attempt to divide by zero"),
        "the span's error is in the printed trace: {stdout}"
    );
}
