//! The story's tight loop between `twlab client` and `twlab server`: fast,
//! and still with the kernel's view of every connection, and no listen
//! queue overflow (which turned each dropped SYN into a 1 s retransmission).

use crate::common;

use common::*;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

const N: usize = 2000;

/// A TcpExt counter of this namespace (`twlab::netstat`, which reads the
/// calling thread's namespace under /proc/thread-self); the test fails if
/// this kernel does not have it.
fn tcp_ext(name: &str) -> u64 {
    twlab::netstat::counter(&format!("TcpExt:{name}"))
        .unwrap_or_else(|| panic!("no TcpExt:{name} in /proc/thread-self/net/netstat"))
}

#[test]
fn tight_loop_keeps_the_evidence_without_listen_overflows() {
    if !netns_or_skip("tight_loop_keeps_the_evidence_without_listen_overflows") {
        return;
    }
    in_netns(&[], || {
        let s: SocketAddr = "127.0.0.1:12345".parse().unwrap();
        let server = Command::new(bin())
            .args(["server", "--listen", "127.0.0.1:12345", "--reuseaddr"])
            .args(["--close", "after-peer", "--count", &N.to_string()])
            .args(["--idle-timeout", "30"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wait_listening(s);
        // The client closes first, kernel-chosen ports, no pause: the loop
        // that overflowed a 128-deep queue.
        let c = run(&[
            "client",
            "--connect",
            "127.0.0.1:12345",
            "--close",
            "first",
            "--count",
            &N.to_string(),
        ]);
        let client_out = String::from_utf8_lossy(&c.stdout).to_string();
        assert_eq!(c.status.code(), Some(0), "{client_out}");
        let server = server.wait_with_output().unwrap();
        let server_out = String::from_utf8_lossy(&server.stdout).to_string();
        assert_eq!(tcp_ext("ListenOverflows"), 0, "{}", tcp_counters());
        assert_eq!(tcp_ext("ListenDrops"), 0, "{}", tcp_counters());
        // Every connection has its line, with the server end's state after
        // close from sock_diag: the client closed first, so the server end
        // went through LAST_ACK and is gone (or still LAST_ACK for an ACK
        // not yet processed).
        let events: Vec<&str> = server_out.lines().filter(|l| l.contains(" #")).collect();
        assert_eq!(events.len(), N, "{server_out}");
        assert!(
            events.iter().all(|l| l.contains("; server end now ")),
            "{server_out}"
        );
        let attempts = client_out
            .lines()
            .filter(|l| l.contains("connect ok"))
            .count();
        assert_eq!(attempts, N, "{client_out}");
        assert!(
            client_out.ends_with(&format!(
                "{N} attempts: {N} ok, 0 failed; stopped: --count {N} reached\n"
            )),
            "{client_out}"
        );
    });
}
