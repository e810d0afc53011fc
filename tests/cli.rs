//! Bad input and faults: each gives one clear line on stderr and a non-zero
//! exit code; never a panic or a backtrace.

mod common;

use common::*;
use std::net::SocketAddr;
// Used by the Linux-only tests below.
use std::process::Command;
#[cfg(target_os = "linux")]
use std::{
    net::TcpListener,
    process::Stdio,
    time::{Duration, Instant},
};

#[test]
fn malformed_addresses_are_one_line_errors() {
    for (args, want) in [
        (
            vec!["client", "--connect", "1.2.3:80"],
            "malformed address '1.2.3:80'",
        ),
        (
            vec!["client", "--connect", "127.0.0.1"],
            "the port is missing",
        ),
        (
            vec!["client", "--connect", "127.0.0.1:99999"],
            "out of range",
        ),
        (
            vec!["client", "--connect", "127.0.0.1:1", "--bind", "x:1"],
            "'x' is not an IP address",
        ),
        (
            vec!["server", "--listen", "localhost"],
            "malformed address 'localhost'",
        ),
    ] {
        let o = run(&args);
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(line.contains("expected IP:PORT"), "{line}");
    }
}

#[test]
fn mixed_families_are_refused() {
    let o = run(&["client", "--connect", "[::1]:80", "--bind", "127.0.0.1:0"]);
    let line = one_line_failure(&o);
    assert!(line.contains("different address families"), "{line}");
}

// Linux's numbers and rule (on Windows SO_REUSEADDR lets the bind through).
#[cfg(target_os = "linux")]
#[test]
fn a_port_in_use_by_a_listener() {
    // A listener of the test's own on a free loopback port (kernel-chosen,
    // so parallel tests never collide).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    for extra in [&[][..], &["--reuseaddr"][..]] {
        let mut args = vec!["server", "--listen", addr.as_str(), "--count", "1"];
        args.extend_from_slice(extra);
        let o = run(&args);
        let line = one_line_failure(&o);
        assert!(
            line.contains(&format!("{addr} is already in use")),
            "{line}"
        );
        assert!(line.contains("EADDRINUSE (98)"), "{line}");
        assert!(line.contains("pick another port"), "{line}");
    }
}

#[test]
fn connection_refused() {
    // A port nothing listens on: bound (so no one else takes it) but never
    // listening, so the SYN is answered with RST.
    let holder = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    holder
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let addr = holder
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .to_string();
    let o = run(&["client", "--connect", &addr, "--count", "1"]);
    let line = one_line_failure(&o);
    assert!(
        line.contains(&format!("connection to {addr} refused")),
        "{line}"
    );
    assert!(line.contains("ECONNREFUSED"), "{line}");
    assert!(line.contains("twlab server --listen"), "{line}");
}

// Needs setpriv and a namespace's ip_unprivileged_port_start: Linux.
#[cfg(target_os = "linux")]
#[test]
fn a_privileged_port_as_an_ordinary_user() {
    let nobody_can_run = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let is_root = nix::unistd::geteuid().is_root();
    if is_root && !nobody_can_run {
        skip("a_privileged_port_as_an_ordinary_user: setpriv cannot run the binary as nobody here");
        return;
    }
    let go = move || {
        let mut cmd = if is_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(bin());
            c
        } else {
            Command::new(bin())
        };
        cmd.args(["server", "--listen", "127.0.0.1:80", "--count", "1"])
            .output()
            .unwrap()
    };
    // As root, in a namespace of our own where ports below 1024 are
    // privileged whatever the host says.
    let o = if is_root && twlab::netns::can_unshare().is_ok() {
        in_netns(&[("net.ipv4.ip_unprivileged_port_start", "1024")], go)
    } else if twlab::sysctl::read("net.ipv4.ip_unprivileged_port_start").as_deref() == Some("1024")
    {
        go()
    } else {
        skip(
            "a_privileged_port_as_an_ordinary_user: ports below 1024 are not privileged on this host",
        );
        return;
    };
    let line = one_line_failure(&o);
    assert!(
        line.contains("permission denied binding 127.0.0.1:80"),
        "{line}"
    );
    assert!(line.contains("EACCES (13)"), "{line}");
    assert!(line.contains("use a port of 1024 or more"), "{line}");
}

#[cfg(target_os = "linux")]
netns_test! {
    fn ctrl_c_stops_the_server_with_one_line() {
        let addr: SocketAddr = "127.0.0.1:12345".parse().unwrap();
        let child = Command::new(bin())
            .args(["server", "--listen", "127.0.0.1:12345"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_listening(addr);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let start = Instant::now();
        let o = child.wait_with_output().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(130));
        assert!(line.contains("interrupted"), "{line}");
    }
}

#[cfg(target_os = "linux")]
netns_test! {
    /// SIGTERM, SIGHUP and SIGQUIT stop the server like Ctrl-C: one line,
    /// exit 128 + the signal's number (before: killed by the signal, no
    /// exit code at all).
    fn other_stop_signals_exit_128_plus_the_signal() {
        use nix::sys::signal::Signal::{SIGHUP, SIGQUIT, SIGTERM};
        for (i, (sig, code, name)) in [
            (SIGTERM, 143, "SIGTERM"),
            (SIGHUP, 129, "SIGHUP"),
            (SIGQUIT, 131, "SIGQUIT"),
        ]
        .into_iter()
        .enumerate()
        {
            let listen = format!("127.0.0.1:{}", 12400 + i);
            let child = Command::new(bin())
                .args(["server", "--listen", &listen])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_listening(listen.parse().unwrap());
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
            let start = Instant::now();
            let o = child.wait_with_output().unwrap();
            assert!(start.elapsed() < Duration::from_secs(5));
            let line = one_line_failure(&o);
            assert_eq!(o.status.code(), Some(code), "{name}: {line}");
            assert_eq!(line, format!("twlab: interrupted by {name}"));
        }
    }
}

#[cfg(target_os = "linux")]
netns_test! {
    /// Ctrl-C reaches a `load` worker blocked in a read with no socket
    /// timeout: its thread ticks, the read returns EINTR, the worker sees
    /// the signal. One line, exit 130, well inside a second.
    fn ctrl_c_stops_a_load_worker_waiting_for_a_silent_server() {
        // Handshakes complete into the listen queue; nobody accepts, so
        // no FIN ever comes.
        let _silent = std::net::TcpListener::bind("127.0.0.1:5002").unwrap();
        let child = Command::new(bin())
            .args(["load", "--target", "127.0.0.1:5002", "--closer", "server"])
            .args(["--requests", "0", "--duration", "600"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The worker's connection and its queued peer: both ESTABLISHED.
        wait_until(Duration::from_secs(5), "the worker's connection", || {
            (count(&[twlab::diag::TcpState::Established]) == 2).then_some(())
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let start = Instant::now();
        let o = child.wait_with_output().unwrap();
        let took = start.elapsed();
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(130), "{line}");
        assert_eq!(line, "twlab: interrupted by SIGINT (Ctrl-C)");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
}

/// `twlab` alone: a short usage pointing at `demo` and `--help`, exit 2.
#[test]
fn no_arguments_print_a_short_usage() {
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8(o.stderr).unwrap();
    let lines = err.lines().count();
    assert!((1..=6).contains(&lines), "{lines} lines: {err}");
    assert!(err.contains("twlab demo"), "{err}");
    assert!(err.contains("twlab --help"), "{err}");
}

/// Input echoed in an error never reaches the terminal raw: escape
/// sequences are escaped as JSON writes them, and a huge argument gives a
/// short line.
#[test]
fn echoed_input_is_escaped_and_cut() {
    let o = run(&["ss", "--state", "\x1b[2Jtime-wait"]);
    let line = one_line_failure(&o);
    assert_eq!(o.status.code(), Some(2), "bad input exits 2");
    assert!(!o.stderr.contains(&0x1b), "{line}");
    assert!(line.contains("'\\u001b[2Jtime-wait'"), "{line}");
    let o = run(&["ss", "--port", "\x1b]0;x\x07"]);
    let line = one_line_failure(&o);
    assert!(!o.stderr.iter().any(|b| *b == 0x1b || *b == 0x07), "{line}");
    assert!(line.contains("\\u001b]0;x\\u0007"), "{line}");
    let huge = "x".repeat(100_000);
    for args in [
        vec!["ss", "--state", huge.as_str()],
        vec!["ss", "--local", huge.as_str()],
        vec!["client", "--connect", huge.as_str()],
        vec!["ss", "--top", huge.as_str()],
    ] {
        let o = run(&args);
        let line = one_line_failure(&o);
        assert!(line.len() < 1_000, "{} bytes: {args:?}", line.len());
        assert!(line.contains("more characters)"), "{args:?}: {line}");
    }
}

#[test]
fn bad_numbers_are_one_line_errors() {
    let o = run(&["client", "--connect", "127.0.0.1:1", "--timeout=-1"]);
    let line = one_line_failure(&o);
    assert!(
        line.contains("--timeout '-1': give a duration such as 30s"),
        "{line}"
    );
    // Units are the way to write a duration; a typo names the grammar.
    let o = run(&["load", "--duration", "3x"]);
    let line = one_line_failure(&o);
    assert_eq!(o.status.code(), Some(2), "{line}");
    assert!(
        line.contains("--duration '3x': give a duration such as 30s, 250ms or 2m"),
        "{line}"
    );
    assert!(!line.contains("float"), "Rust's wording leaked: {line}");
}

#[test]
fn usage_errors_are_one_line_with_exit_code_2() {
    for args in [
        &["client"][..],
        &["client", "--connect", "127.0.0.1:1", "--count", "many"][..],
        &["server", "--close", "sometimes"][..],
        &["no-such-command"][..],
    ] {
        let o = run(args);
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {line}");
        assert!(line.contains("--help"), "{line}");
    }
}

#[test]
fn durations_past_their_bound_are_usage_errors() {
    for (args, flag) in [
        (
            &["client", "--connect", "127.0.0.1:1", "--timeout", "inf"][..],
            "--timeout",
        ),
        (
            &["client", "--connect", "127.0.0.1:1", "--timeout", "1e20"][..],
            "--timeout",
        ),
        (
            &[
                "client",
                "--connect",
                "127.0.0.1:1",
                "--timeout",
                "18446744073709551615",
            ][..],
            "--timeout",
        ),
        (
            &["client", "--connect", "127.0.0.1:1", "--timeout", "NaN"][..],
            "--timeout",
        ),
        (
            &["client", "--connect", "127.0.0.1:1", "--timeout", "86401"][..],
            "--timeout",
        ),
        (
            &[
                "client",
                "--connect",
                "127.0.0.1:1",
                "--interval",
                "18446744073709551615",
            ][..],
            "--interval",
        ),
        (
            &[
                "client",
                "--connect",
                "127.0.0.1:1",
                "--linger",
                "4294967295",
            ][..],
            "--linger",
        ),
        (&["server", "--idle-timeout", "1e20"][..], "--idle-timeout"),
        (&["server", "--idle-timeout", "inf"][..], "--idle-timeout"),
        (
            &["server", "--close-delay", "18446744073709551615"][..],
            "--close-delay",
        ),
    ] {
        let o = run(args);
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {line}");
        assert!(
            line.contains(&format!("{flag} must be")) || line.contains(&format!("{flag} '")),
            "{args:?}: {line}"
        );
        assert!(line.contains("at most") || line.contains(" to "), "{line}");
    }
}

#[test]
fn duration_bounds_are_in_the_help() {
    for (cmd, bounds) in [
        ("client", &["86400", "3600000", "3600"][..]),
        ("server", &["86400", "3600000", "3600"][..]),
    ] {
        let o = run(&[cmd, "--help"]);
        // clap wraps lines: compare with the whitespace collapsed.
        let help = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for b in bounds {
            assert!(
                help.contains(&format!("at most {b}")),
                "{cmd}: {b} in\n{help}"
            );
        }
    }
}

#[test]
fn bad_ports_and_families_exit_2() {
    for args in [
        &["client", "--connect", "127.0.0.1:65536"][..],
        &[
            "client",
            "--connect",
            "127.0.0.1:1",
            "--bind",
            "127.0.0.1:65536",
        ][..],
        &["server", "--listen", "127.0.0.1:65536"][..],
        &["client", "--connect", "[::1]:80", "--bind", "127.0.0.1:0"][..],
    ] {
        let o = run(args);
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {line}");
    }
}

/// Bad input found after parsing exits 2 as clap's own errors do, with one
/// line that says what is wrong (issue 19's list, and every float flag of
/// `load` against NaN, infinities and values past their range).
#[test]
fn bad_input_found_after_parsing_exits_2() {
    for args in [
        &["ss", "--port", "70000"][..],
        &["ss", "--state", "timewait"][..],
        &["ss", "--family", "5"][..],
        &["load", "--duration", "0"][..],
        &["load", "--port-range", "70000-80000"][..],
        &["load", "--dest", "70000"][..],
        &["load", "--rate", "NaN"][..],
        &["load", "--rate", "inf"][..],
        &["load", "--rate", "1e309"][..],
        &["load", "--rate", "0"][..],
        &["why", "bind", "8080"][..],
        &["why", "bind", "127.0.0.1"][..],
        &["trace", "9"][..],
    ] {
        let o = run(args);
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {line}");
    }
}

#[cfg(target_os = "linux")]
netns_test! {
    /// `load` sends traffic only to loopback: a target, destination or
    /// source outside 127/8 is refused with exit 2 before any socket
    /// exists. Run in a fresh namespace that has nothing but `lo`, so that
    /// nothing could leave even if the check were missing.
    fn load_refuses_addresses_off_loopback() {
        for args in [
            &["load", "--target", "10.0.0.1:80", "--duration", "1"][..],
            &["load", "--dest", "192.0.2.1:80", "--duration", "1"][..],
            &["load", "--source", "10.0.0.1", "--port", "bind", "--duration", "1"][..],
        ] {
            let o = run(args);
            let line = one_line_failure(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {line}");
            assert!(line.contains("loopback"), "{line}");
        }
    }
}

/// `twlab completions` and `twlab man` write to stdout; an unknown
/// command's page is a usage error that lists the commands.
#[test]
fn completions_and_man_pages() {
    let zsh = Command::new(bin())
        .args(["completions", "zsh"])
        .output()
        .unwrap();
    assert!(zsh.status.success());
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef twlab"));
    let man = Command::new(bin()).args(["man", "ss"]).output().unwrap();
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH twlab-ss 1"), "{page}");
    assert!(page.contains("\\-\\-summary"), "{page}");
    let bad = Command::new(bin()).args(["man", "sss"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let line = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("one of: demo"), "{line}");
    let shell = Command::new(bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(shell.status.code(), Some(2));
}

/// As an ordinary user (root drops to nobody with setpriv), the commands
/// that make namespaces of their own run in an unprivileged user
/// namespace and say so; pairs leaves out the other-uid cells (one uid is
/// mapped there) instead of observing them wrongly; a scenario with
/// another uid's socket is refused in one line.
#[cfg(target_os = "linux")]
#[test]
fn namespace_commands_run_unprivileged() {
    let test = "namespace_commands_run_unprivileged";
    if !nix::unistd::geteuid().is_root() {
        skip(&format!(
            "{test}: needs root to drop to nobody with setpriv"
        ));
        return;
    }
    let nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(args)
            .output()
    };
    let Ok(probe) = nobody(&["--version"]) else {
        skip(&format!("{test}: no setpriv"));
        return;
    };
    if !probe.status.success() {
        skip(&format!(
            "{test}: setpriv cannot run the binary as nobody here"
        ));
        return;
    }
    // Does this kernel let an ordinary user make a user namespace at all?
    let userns = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "-Ur",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success());
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scenarios/reuseport-listeners.toml"
    );
    for args in [
        &["trace"][..],
        &["load", "--duration", "1"],
        &["pairs", "--bindv6only", "0"],
        &["reuseport"],
        &["run", scenario],
    ] {
        let o = nobody(args).unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if !userns {
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("no user namespace either"), "{args:?}: {err}");
            continue;
        }
        assert!(
            err.contains("unprivileged user namespace"),
            "{args:?}: {err}"
        );
        if args[0] == "run" {
            // reuseport-listeners.toml has an 'intruder' of uid 65534; as
            // nobody mapped to root, that is another uid.
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("cannot act as another uid"), "{err}");
            continue;
        }
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        if args[0] == "pairs" {
            assert!(err.contains("other-uid cells are left out"), "{err}");
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(out.contains(" 0 mismatches"), "{out}");
        }
    }
}

/// iproute2's ss habits (`-tan`, `-s`) and near-miss state names get the
/// twlab spelling in the one error line, exit 2.
#[test]
fn ss_habits_and_near_misses_get_the_twlab_spelling() {
    for (args, wants) in [
        (
            &["ss", "-tan"][..],
            &["'-tan'", "leave -t out", "leave -n out", "-a not needed"][..],
        ),
        (&["ss", "-s"][..], &["twlab ss --summary"][..]),
        (&["ss", "-4"][..], &["--family 4"][..]),
        (
            &["ss", "--state", "timewait"][..],
            &["did you mean 'time-wait'?"][..],
        ),
    ] {
        let o = run(args);
        let line = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {line}");
        for w in wants {
            assert!(line.contains(w), "{args:?}: want {w:?} in {line}");
        }
    }
    // An unknown letter that is no ss habit gets no made-up advice.
    let line = one_line_failure(&run(&["ss", "-z"]));
    assert!(!line.contains("iproute2"), "{line}");
}
