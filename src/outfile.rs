//! Files twlab writes at a path the user gave (`trace --pcap`, `load
//! --plot`, selfcheck's scenario files): written whole or not at all.
//!
//! The bytes go to a new temporary file in the same directory, are flushed
//! and fsync()ed, then rename()d over the path: rename(2) replaces
//! atomically within one file system, so a reader never sees a
//! half-written capture, and a failed write (a full disk, EIO) leaves the
//! old file as it was and no temporary behind. The temporary is created
//! with `O_CREAT | O_EXCL` (`create_new`), which never follows a symbolic
//! link and never opens anything already there (open(2), POSIX; Windows'
//! `CREATE_NEW` alike).
//!
//! The policy, the same for every writer:
//! - a symbolic link at the path is refused, not followed (the capture
//!   would land wherever the link points), and so is anything that is not
//!   a regular file, and a path whose directory does not exist: bad input,
//!   exit 2, found by [`check_target`] before any work;
//! - a directory twlab cannot create files in (EACCES, EROFS) is found by
//!   the same check, by creating and removing a temporary there: exit 1;
//! - replacing an existing regular file needs no `--force` (a re-run to the
//!   same name is the common case), but is said on stderr
//!   ([`Written::note`]); the new file keeps the old one's permissions;
//! - a failed write (ENOSPC, EIO, a failed rename) is one line naming the
//!   errno and what is left, exit 1.

use crate::error::{Error, Result};
use crate::outcome::SysError;
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
    /// The line for stderr: "pcap: wrote FILE", or "pcap: replaced the
    /// existing FILE" when a file was there.
    pub fn note(&self, what: &str) -> String {
        if self.replaced {
            format!("{what}: replaced the existing {}", shown(&self.path))
        } else {
            format!("{what}: wrote {}", shown(&self.path))
        }
    }
}

/// Is `path` a place twlab may write to? `Ok(true)` if a regular file is
/// there (it will be replaced), `Ok(false)` if nothing is. A link, a
/// directory, a FIFO, a device or a missing directory is a usage error
/// (exit 2); a directory where no file can be created (a read-only file
/// system, no permission) an error (exit 1). Call it before the work, so
/// a long run does not end in a refusal.
pub fn check_target(path: &Path) -> Result<bool> {
    let replaced = inspect(path)?;
    // Found by doing what the write will do, not by access(2): root passes
    // access(W_OK) on a read-only bind mount's directory, and /proc and
    // /sys answer per file.
    let tmp = create_temp(path)?;
    drop(tmp);
    Ok(replaced)
}

/// Write `path` whole with `fill`, through a temporary file renamed into
/// place (see the module). `fill` gets a buffered writer; its error (or
/// any I/O error) removes the temporary and comes back as one line that
/// names the errno and says what is left at `path`.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::result::Result<(), String>,
) -> Result<Written> {
    let replaced = inspect(path)?;
    // The old file's permissions carry over (a 0644 capture stays 0644).
    let old_perms = replaced
        .then(|| fs::symlink_metadata(path).ok().map(|m| m.permissions()))
        .flatten();
    let tmp = create_temp(path)?;
    let left = if replaced {
        format!("{} is left as it was", shown(path))
    } else {
        format!("no file was left at {}", shown(path))
    };
    let failed = |err: SysError| -> Error {
        Error::Invalid(format!(
            "writing {} failed: {err}{}; {left}",
            shown(path),
            hint(&err)
        ))
    };
    let mut w = BufWriter::new(Recorder {
        file: &tmp.file,
        err: None,
    });
    if let Err(why) = fill(&mut w) {
        // An I/O error under the encoder is the reason, in errno terms;
        // otherwise the encoder's own words.
        return Err(match w.get_ref().err.clone() {
            Some(err) => failed(err),
            None => Error::Invalid(format!("writing {}: {why}; {left}", shown(path))),
        });
    }
    // ENOSPC on a buffered write shows up here, at the last flush.
    if let Err(e) = w.flush() {
        return Err(failed(SysError::from_io(&e)));
    }
    drop(w);
    if let Some(p) = old_perms {
        tmp.file
            .set_permissions(p)
            .map_err(|e| failed(SysError::from_io(&e)))?;
    }
    // Durable before it replaces anything: after a crash the path holds
    // the old file or the new one, never an empty one (ext4 and xfs may
    // otherwise commit the rename before the data: the zero-length file
    // after a crash, see rename(2) and the ext4 auto_da_alloc notes).
    tmp.file
        .sync_all()
        .map_err(|e| failed(SysError::from_io(&e)))?;
    // rename(2) replaces a link put at `path` since inspect() instead of
    // following it: nothing is ever written through a link.
    if let Err(e) = fs::rename(&tmp.path, path) {
        let err = SysError::from_io(&e);
        // The temporary is in the path's own directory, so only a mount
        // on the path itself (a bind-mounted file) comes between them:
        // rename(2) refuses to replace a mount point (EBUSY), and a
        // mount of another file system there would be EXDEV.
        let why = if err.is("EBUSY") {
            format!(
                "{} is a mount point (a file mounted there), which rename() cannot replace: give another name",
                shown(path)
            )
        } else if err.is("EXDEV") {
            format!(
                "{} is on another file system than its directory (a file mounted there), and rename() does not cross file systems: give another name",
                shown(path)
            )
        } else {
            "the finished file could not be renamed into place".to_string()
        };
        return Err(Error::Invalid(format!(
            "writing {} failed at the rename: {err}: {why}; {left}",
            shown(path)
        )));
    }
    tmp.keep();
    // The rename itself durable too: fsync the directory (Linux, BSD;
    // a directory cannot be opened as a file on Windows: nothing to do).
    if let Ok(d) = fs::File::open(parent(path)) {
        let _ = d.sync_all();
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

/// The checks on the path itself: what is there, and its directory.
fn inspect(path: &Path) -> Result<bool> {
    if path.as_os_str().is_empty() {
        return Err(Error::Usage("an empty file name: give a file name".into()));
    }
    if path.file_name().is_none() {
        return Err(Error::Usage(format!(
            "{} names a directory, not a file: give a file name",
            shown(path)
        )));
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Usage(format!(
            "{} is a symbolic link: twlab does not write through links; give the file's real path or a new name",
            shown(path)
        ))),
        Ok(m) if !m.is_file() => Err(Error::Usage(format!(
            "{} exists and is not a regular file: give a file name",
            shown(path)
        ))),
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            let dir = parent(path);
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(false),
                _ => Err(Error::Usage(format!(
                    "{}: the directory {} does not exist",
                    shown(path),
                    shown(dir)
                ))),
            }
        }
        Err(e) => Err(Error::Invalid(format!(
            "cannot look at {}: {}",
            shown(path),
            SysError::from_io(&e)
        ))),
    }
}

/// A path as a message shows it: control characters escaped, cut at
/// [`crate::text::ECHO_MAX_CHARS`].
fn shown(path: &Path) -> String {
    crate::text::echo(&path.to_string_lossy())
}

/// What an errno means for a file being written.
fn hint(err: &SysError) -> &'static str {
    if err.is("ENOSPC") {
        " (the file system is full)"
    } else if err.is("EDQUOT") {
        " (the disk quota is used up)"
    } else if err.is("EROFS") {
        " (the file system is read-only)"
    } else if err.is("EACCES") || err.is("EPERM") {
        " (no permission to create files there)"
    } else if err.is("EFBIG") {
        " (the file is larger than this file system or RLIMIT_FSIZE allows)"
    } else {
        ""
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file beside the path, removed when dropped unless kept.
struct Temp {
    path: PathBuf,
    file: fs::File,
    keep: bool,
}

impl Temp {
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The file under a writer, remembering the first I/O error: encoders
/// (pcap_file) turn it into their own words, and the errno is what says
/// "the disk is full".
struct Recorder<'a> {
    file: &'a fs::File,
    err: Option<SysError>,
}

impl Recorder<'_> {
    fn seen<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        match &r {
            Err(e) if self.err.is_none() && e.kind() != io::ErrorKind::Interrupted => {
                self.err = Some(SysError::from_io(e));
            }
            _ => {}
        }
        r
    }
}

impl Write for Recorder<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.file.write(buf);
        self.seen(r)
    }
    fn flush(&mut self) -> io::Result<()> {
        let r = self.file.flush();
        self.seen(r)
    }
}

/// A new file beside `path`: `.NAME.twlab-PID-N.tmp`, created exclusively.
fn create_temp(path: &Path) -> Result<Temp> {
    static N: AtomicU32 = AtomicU32::new(0);
    let name: String = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
        .chars()
        // Within NAME_MAX (255 bytes) with the affixes, whatever the name.
        .take(64)
        .collect();
    let dir = parent(path);
    // A bounded number of tries: names are unique per process and call,
    // so a clash means a stale temporary of a process with our pid.
    for _ in 0..16 {
        let tmp = dir.join(format!(
            ".{name}.twlab-{}-{}.tmp",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => {
                return Ok(Temp {
                    path: tmp,
                    file,
                    keep: false,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                let err = SysError::from_io(&e);
                return Err(Error::Invalid(format!(
                    "cannot write {}: creating a file in {} failed: {err}{}; nothing was written",
                    shown(path),
                    shown(dir),
                    hint(&err)
                )));
            }
        }
    }
    Err(Error::Invalid(format!(
        "cannot write {}: every temporary name beside it is taken",
        shown(path)
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

    /// Every name in `d` but `keep`'s.
    fn others(d: &Path, keep: &[&str]) -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect()
    }

    #[test]
    fn a_new_file_then_a_replaced_one_is_said() {
        let d = dir("new");
        let p = d.join("x.pcap");
        assert!(!check_target(&p).unwrap());
        let w = write_bytes(&p, b"one").unwrap();
        assert!(!w.replaced);
        assert!(
            w.note("pcap").starts_with("pcap: wrote "),
            "{}",
            w.note("pcap")
        );
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert!(check_target(&p).unwrap());
        let w = write_bytes(&p, b"two").unwrap();
        assert!(w.replaced);
        assert!(
            w.note("pcap").starts_with("pcap: replaced the existing "),
            "{}",
            w.note("pcap")
        );
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(others(&d, &["x.pcap"]).is_empty());
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
        assert!(matches!(check_target(&link), Err(Error::Usage(_))));
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        // A dangling link too: writing would create its target.
        let dangling = d.join("dangling.pcap");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            write_bytes(&dangling, b"new"),
            Err(Error::Usage(_))
        ));
        assert!(!d.join("nowhere").exists());
        assert!(others(&d, &["target", "link.pcap", "dangling.pcap"]).is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let d = dir("fail");
        let p = d.join("x.svg");
        fs::write(&p, b"old").unwrap();
        let e = write_with(&p, |w| {
            w.write_all(b"half").map_err(|e| e.to_string())?;
            Err("the encoder gave up".into())
        })
        .unwrap_err();
        let line = e.to_string();
        assert!(line.contains("the encoder gave up"), "{line}");
        assert!(line.contains("is left as it was"), "{line}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        // And for a new name: nothing there afterwards.
        let q = d.join("new.svg");
        let e = write_with(&q, |_| Err("no".into())).unwrap_err();
        assert!(e.to_string().contains("no file was left"), "{e}");
        assert!(!q.exists());
        assert!(others(&d, &["x.svg"]).is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    /// /dev/full answers every write with ENOSPC: the error a full file
    /// system gives, without filling one. Its errno comes through the
    /// encoder's words.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_io_error_under_the_writer_is_named_by_its_errno() {
        let mut r = Recorder {
            file: &fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
            err: None,
        };
        assert!(r.write_all(b"x").is_err());
        let err = r.err.clone().expect("the error recorded");
        assert!(err.is("ENOSPC"), "{err}");
        assert_eq!(hint(&err), " (the file system is full)");
    }

    #[test]
    fn a_directory_or_a_missing_directory_is_a_usage_error() {
        let d = dir("dir");
        assert!(matches!(check_target(&d), Err(Error::Usage(_))));
        assert!(matches!(
            check_target(&d.join("no/such/x.pcap")),
            Err(Error::Usage(_))
        ));
        // A path through a regular file (ENOTDIR).
        fs::write(d.join("file"), b"").unwrap();
        assert!(matches!(
            check_target(&d.join("file/x.pcap")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(check_target(Path::new("")), Err(Error::Usage(_))));
        assert!(!check_target(&d.join("new.pcap")).unwrap());
        assert!(others(&d, &["file"]).is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    /// A directory no file can be created in is an error (exit 1), not a
    /// usage error, found by the check before any work.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_directory_without_room_for_a_file_is_an_error() {
        // /proc's top level takes no new files, for root either.
        let e = check_target(Path::new("/proc/twlab-outfile-test.pcap")).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        assert!(
            e.to_string().contains("creating a file in /proc failed"),
            "{e}"
        );
        assert!(!Path::new("/proc/twlab-outfile-test.pcap").exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("perm");
        let p = d.join("x.pcap");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_bytes(&p, b"new").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_long_name_gets_a_temporary_within_name_max() {
        let d = dir("long");
        let name = format!("{}.pcap", "n".repeat(245));
        let p = d.join(&name);
        write_bytes(&p, b"x").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
        assert!(others(&d, &[&name]).is_empty());
        let _ = fs::remove_dir_all(&d);
    }
}
