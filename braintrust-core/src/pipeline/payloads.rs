//! Payload files: request bodies written to `BRAINTRUST_FAILED_PUBLISH_PAYLOADS_DIR`
//! (rows that failed or were given up) and `BRAINTRUST_ALL_PUBLISH_PAYLOADS_DIR`
//! (every body). They hold users' inputs and outputs, so the directory is
//! created 0700 and each file 0600.

use std::io::Write as _;
use std::path::Path;

/// Writes `body` to a new file in `dir`. Returns false (after one warning
/// per directory) when it cannot.
pub(crate) fn write(dir: &Path, body: &str) -> bool {
    match try_write(dir, body) {
        Ok(()) => true,
        Err(e) => {
            crate::diagnostics::warn_once(
                &format!("payload-dir-{}", dir.display()),
                &format!(
                    "braintrust: cannot write payload files to {}: {e}; rows are counted but not written",
                    dir.display()
                ),
            );
            false
        }
    }
}

fn try_write(dir: &Path, body: &str) -> std::io::Result<()> {
    create_private_dir(dir)?;
    let ts = crate::time::now_secs();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let path = dir.join(format!("payload_{ts:.6}_{}.json", &id[..8]));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(body.as_bytes())?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        assert!(write(&dir, "{\"rows\": []}"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(file).unwrap(), "{\"rows\": []}");
    }

    #[test]
    fn an_unwritable_dir_is_reported_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        assert!(!write(&file.join("sub"), "{}"));
    }
}
