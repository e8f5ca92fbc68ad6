//! This run's creation (incarnation number): the wall clock in microseconds, raised above the
//! previous run's when a `creation_file` remembers it, so a restart is always the newer run.

use std::path::Path;

use partisan_core::id::Creation;

use crate::error::StartError;

/// The creation of a run starting now. With `file`, the creation is above the one stored there
/// (if any), and is written back (to a temporary file renamed over it, then synced) before this
/// returns. One file per node: two nodes starting at once on one file may collide.
pub(crate) fn next(file: Option<&Path>) -> Result<Creation, StartError> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
        .max(1);
    let Some(path) = file else {
        return Ok(clock);
    };
    let fail = |reason: String| StartError::CreationFile {
        path: path.to_path_buf(),
        reason,
    };
    let previous = match std::fs::read_to_string(path) {
        // The content is not echoed: the path may point at a secret by mistake.
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| fail("does not hold a creation number".into()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(fail(format!("cannot read: {e}"))),
    };
    let creation = clock.max(
        previous
            .checked_add(1)
            .ok_or_else(|| fail("creation numbers exhausted".into()))?,
    );
    // Next to the file, under its whole name plus `.tmp` (never another file's name).
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{creation}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a power cut only once the directory is synced.
        #[cfg(unix)]
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| fail(format!("cannot write: {e}")))?;
    Ok(creation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("partisan-creation-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("creation")
    }

    #[test]
    fn every_run_is_newer_than_the_last_even_with_the_clock_behind() {
        let path = scratch("ahead");
        // The previous run started with the clock far ahead of today's.
        let ahead = 4_000_000_000_000_000u64;
        std::fs::write(&path, format!("{ahead}\n")).unwrap();
        let c1 = next(Some(&path)).unwrap();
        assert_eq!(c1, ahead + 1);
        let c2 = next(Some(&path)).unwrap();
        assert_eq!(c2, ahead + 2);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            c2.to_string()
        );
    }

    #[test]
    fn a_missing_file_starts_from_the_clock_and_is_created() {
        let path = scratch("missing");
        let before = next(None).unwrap();
        let c = next(Some(&path)).unwrap();
        assert!(c >= before);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            c.to_string()
        );
    }

    #[test]
    fn a_corrupt_or_unwritable_file_is_an_error_naming_it() {
        let path = scratch("corrupt");
        std::fs::write(&path, "not a number").unwrap();
        let e = next(Some(&path)).unwrap_err().to_string();
        assert!(
            e.contains("creation_file") && e.contains("creation number"),
            "{e}"
        );
        assert!(
            !e.contains("not a number"),
            "the content is not echoed: {e}"
        );
        let dir = scratch("unwritable");
        let inside_missing_dir = dir.join("nope").join("creation");
        let e = next(Some(&inside_missing_dir)).unwrap_err().to_string();
        assert!(e.contains("cannot write"), "{e}");
    }
}
