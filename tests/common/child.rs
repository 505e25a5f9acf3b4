//! Child processes of the `exit_flush` example, timed from the end of their
//! `main` to their exit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn example_bin() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/exit_flush
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("exit_flush{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "build the example first: cargo build --example exit_flush ({bin:?})"
    );
    bin
}

pub struct Outcome {
    pub status: std::process::ExitStatus,
    /// Time from the child's "main returns" line to its exit.
    pub exit_after_main: Duration,
    pub stderr: String,
}

/// Children run one at a time: the timing assertions measure the child, not
/// how busy two cores are with its siblings.
static ONE_CHILD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the `exit_flush` example against `url` and times its exit.
pub fn run_child_at(url: &str, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let _one = ONE_CHILD_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(example_bin());
    cmd.args(args)
        .env_remove("BRAINTRUST_DISABLE_ATEXIT_FLUSH")
        .env_remove("BRAINTRUST_EXIT_FLUSH_TIMEOUT")
        .env("BRAINTRUST_API_KEY", "test-key")
        .env("BRAINTRUST_APP_URL", url)
        .env("BRAINTRUST_API_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s).unwrap();
        s
    });
    let mut returned_at = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("MAIN_RETURNING") {
            returned_at = Some(Instant::now());
        }
    }
    let status = child.wait().unwrap();
    let exited = Instant::now();
    let stderr = err_reader.join().unwrap();
    let returned_at = returned_at
        .unwrap_or_else(|| panic!("child never reached the end of main; stderr:\n{stderr}"));
    Outcome {
        status,
        exit_after_main: exited.duration_since(returned_at),
        stderr,
    }
}
