//! Every file twlab writes at a path the user gave (`trace --pcap`, `load
//! --plot`, `selfcheck --out`'s scenario files) goes through one
//! implementation (src/outfile.rs): refused before the run where the
//! directory cannot take a file, and on a full file system one line, exit
//! 1, and no file. Each test mounts a tmpfs in a mount namespace of its
//! own thread (root; otherwise it says it was skipped).

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

/// Fill the file system under `dir` to its last block (bounded: 64 tries
/// of 4 KiB for a 64 KiB tmpfs).
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = [0u8; 4096];
    let full = (0..64).any(|_| f.write_all(&block).and_then(|_| f.sync_all()).is_err());
    assert!(full, "a 64 KiB tmpfs took 256 KiB");
}

fn twlab(args: &[&str], path: &Path) -> Output {
    Command::new(common::bin())
        .args(args)
        .arg(path)
        .output()
        .expect("run twlab")
}

/// Every writer, its arguments before the path, and the path's name.
const WRITERS: [(&[&str], &str); 3] = [
    (&["trace", "--pcap"], "t.pcap"),
    (&["load", "--duration", "1s", "--plot"], "p.svg"),
    // --out names the directory; the files go inside it.
    (&["selfcheck", "--cases", "1", "--out"], ""),
];

netns_test! {
    /// A read-only directory is found before any work, by every writer:
    /// exit 1, one line naming EROFS, nothing on stdout (the run did not
    /// happen), nothing written.
    fn every_writer_refuses_a_read_only_directory_before_its_run() {
        let test = "every_writer_refuses_a_read_only_directory_before_its_run";
        let Some(d) = common::tmpfs_dir(test, "size=64k,mode=0755") else {
            return;
        };
        common::remount_read_only(&d);
        for (args, name) in WRITERS {
            let p = if name.is_empty() { d.clone() } else { d.join(name) };
            let o = twlab(args, &p);
            let line = common::one_line_failure(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {line}");
            assert!(line.contains("EROFS"), "{args:?}: {line}");
            assert!(o.stdout.is_empty(), "{args:?} ran before refusing");
        }
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        common::unmount_and_remove(&d);
    }
}

netns_test! {
    /// `load --plot` on a full file system: the run happens, then the
    /// plot cannot be written: exit 1, one line naming ENOSPC, no file and
    /// no temporary at the path (the same write as `trace --pcap`, whose
    /// own test is in tests/it/trace.rs).
    fn load_plot_on_a_full_file_system_exits_1_and_leaves_no_file() {
        let test = "load_plot_on_a_full_file_system_exits_1_and_leaves_no_file";
        let Some(d) = common::tmpfs_dir(test, "size=64k,mode=0755") else {
            return;
        };
        fill(&d);
        let p = d.join("p.svg");
        let o = twlab(&["load", "--duration", "1s", "--plot"], &p);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(lines[0].contains("ENOSPC"), "{err}");
        assert!(!p.exists(), "a file was left");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["filler"], "only the filler: {names:?}");
        common::unmount_and_remove(&d);
    }
}

/// `selfcheck --out FILE` (a regular file, not a directory) is bad input:
/// exit 2 before the run.
#[test]
fn selfcheck_out_that_is_a_file_exits_2() {
    if !common::netns_or_skip("selfcheck_out_that_is_a_file_exits_2") {
        return;
    }
    let d = common::fresh_dir("selfcheck-out-file");
    let f = d.join("f");
    std::fs::write(&f, b"keep").unwrap();
    let o = twlab(&["selfcheck", "--cases", "1", "--out"], &f);
    let line = common::one_line_failure(&o);
    assert_eq!(o.status.code(), Some(2), "{line}");
    assert!(line.contains("not a directory"), "{line}");
    assert!(o.stdout.is_empty());
    assert_eq!(std::fs::read(&f).unwrap(), b"keep");
    let _ = std::fs::remove_dir_all(&d);
}
