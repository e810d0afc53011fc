//! `cargo run --example holders -- 8080`: who holds a TCP port on this
//! machine, and would a new listener get it? The library's live diagnosis
//! (`twlab::why::live`, what `twlab why port` prints) read as plain data:
//! one sock_diag dump, no command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: holders PORT (a port number, e.g. 8080)");
        return ExitCode::from(2);
    };
    // `false`: predict from the socket table only; `true` would also try
    // the bind() itself and compare.
    let d = match twlab::why::live::port(port, false) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("holders: {e}");
            return ExitCode::FAILURE;
        }
    };
    if d.holders.is_empty() {
        println!("port {port}: no socket holds it");
    }
    for h in &d.holders {
        let left = h
            .timer
            .map(|t| format!(", {:.1} s left", f64::from(t.expires_ms) / 1000.0))
            .unwrap_or_default();
        let owners: Vec<String> = h
            .owners
            .iter()
            .map(|o| {
                format!(
                    "{} (pid {})",
                    twlab::text::escape_for_terminal(&o.name),
                    o.pid
                )
            })
            .collect();
        // A listener's or a bound-only socket's peer is `0.0.0.0:0`.
        let peer = if h.peer.port() == 0 {
            String::new()
        } else {
            format!(" → {}", h.peer)
        };
        println!(
            "{} {}{peer}{left} {}",
            h.state.ss_name(),
            h.local,
            owners.join(", ")
        );
    }
    println!(
        "a listener on 0.0.0.0:{port}: {} (rule {}, {})",
        d.expect.describe(),
        d.rule,
        d.kernel_fn
    );
    ExitCode::SUCCESS
}
