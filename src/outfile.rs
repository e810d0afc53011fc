//! Files twlab writes at a path the user gave (`trace --pcap`, `load
//! --plot`, selfcheck's scenario files): written whole or not at all.
//!
//! The bytes go to a new temporary file in the same directory (created
//! with `O_EXCL`, so nothing that is already there is followed or
//! truncated), are flushed and fsync()ed, then rename()d over the path:
//! rename(2) replaces atomically within one file system, so a reader never
//! sees a half-written capture, and a failed write (a full disk, EIO)
//! leaves the old file as it was and no temporary behind. A symbolic link
//! at the path is refused, not followed (the capture would land wherever
//! the link points), and so is anything that is not a regular file.

use crate::error::{Error, Result};
use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A file written in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where it is.
    pub path: PathBuf,
    /// A regular file was there before and is now replaced (say so).
    pub replaced: bool,
}

impl Written {
    /// "wrote FILE" / "replaced FILE", for a note on stderr.
    pub fn note(&self, what: &str) -> String {
        let verb = if self.replaced { "replaced" } else { "wrote" };
        format!("{what}: {verb} {}", self.path.display())
    }
}

/// Is `path` a place twlab may write to? `Ok(true)` if a regular file is
/// there (it will be replaced), `Ok(false)` if nothing is; a link, a
/// directory, a FIFO or a device is a usage error (exit 2), checked before
/// any work so a long run does not end in a refusal.
pub fn check_target(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Usage(format!(
            "{} is a symbolic link: twlab does not write through links; give the file's real path or a new name",
            path.display()
        ))),
        Ok(m) if !m.is_file() => Err(Error::Usage(format!(
            "{} exists and is not a regular file: give a file name",
            path.display()
        ))),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = parent(path);
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(false),
                _ => Err(Error::Usage(format!(
                    "{}: the directory {} does not exist",
                    path.display(),
                    dir.display()
                ))),
            }
        }
        Err(e) => Err(Error::sys(format!("looking at {}", path.display()), &e)),
    }
}

/// Write `path` whole with `fill`, through a temporary file renamed into
/// place (see the module). `fill` gets a buffered writer; its error (or
/// any I/O error) removes the temporary and comes back as one line.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::result::Result<(), String>,
) -> Result<Written> {
    let replaced = check_target(path)?;
    let (tmp, f) = create_temp(path)?;
    let what = format!("writing {}", path.display());
    let done = (|| -> std::result::Result<(), String> {
        let mut w = BufWriter::new(f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.error().to_string())?;
        // Durable before it replaces anything: a crash leaves the old
        // file or the new one, not an empty one.
        f.sync_all().map_err(|e| e.to_string())
    })();
    if let Err(e) = done {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Invalid(format!("{what}: {e}")));
    }
    // Checked again just before the rename: a link put there meanwhile
    // is replaced by the rename (rename(2) does not follow it), never
    // written through.
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::sys(what, &e));
    }
    Ok(Written {
        path: path.to_path_buf(),
        replaced,
    })
}

/// Write `bytes` to `path` (see [`write_with`]).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<Written> {
    write_with(path, |w| w.write_all(bytes).map_err(|e| e.to_string()))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A new file beside `path`: `.NAME.twlab-PID-N.tmp`, created exclusively.
fn create_temp(path: &Path) -> Result<(PathBuf, fs::File)> {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // A bounded number of tries: names are unique per process and call,
    // so a clash means a stale temporary of a process with our pid.
    for _ in 0..16 {
        let tmp = parent(path).join(format!(
            ".{name}.twlab-{}-{}.tmp",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::sys(
                    format!("creating a file in {}", parent(path).display()),
                    &e,
                ));
            }
        }
    }
    Err(Error::Invalid(format!(
        "creating a temporary file beside {}: every name taken",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("twlab-outfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn a_new_file_then_a_replaced_one_is_said() {
        let d = dir("new");
        let p = d.join("x.pcap");
        let w = write_bytes(&p, b"one").unwrap();
        assert!(!w.replaced);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        let w = write_bytes(&p, b"two").unwrap();
        assert!(w.replaced);
        assert!(w.note("pcap").starts_with("pcap: replaced "));
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(leftovers(&d).is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_refused_and_its_target_untouched() {
        let d = dir("link");
        let target = d.join("target");
        fs::write(&target, b"keep").unwrap();
        let link = d.join("link.pcap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = write_bytes(&link, b"new").unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(leftovers(&d).is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let d = dir("fail");
        let p = d.join("x.svg");
        fs::write(&p, b"old").unwrap();
        let e = write_with(&p, |w| {
            w.write_all(b"half").map_err(|e| e.to_string())?;
            Err("No space left on device".into())
        })
        .unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(leftovers(&d).is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_directory_or_a_missing_directory_is_a_usage_error() {
        let d = dir("dir");
        assert!(matches!(check_target(&d), Err(Error::Usage(_))));
        assert!(matches!(
            check_target(&d.join("no/such/x.pcap")),
            Err(Error::Usage(_))
        ));
        assert!(!check_target(&d.join("new.pcap")).unwrap());
        let _ = fs::remove_dir_all(&d);
    }
}
