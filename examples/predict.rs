//! `cargo run --example predict`: the rule model as a library, no sockets
//! and no command line. A socket table (one client TIME_WAIT for a 4-tuple)
//! and the namespace's sysctls are written by hand; the model predicts what
//! a reconnect would do under each setting and says why, and what Windows
//! and BSD/macOS would do instead.

use std::net::SocketAddr;
use twlab::diag::{SockEntry, TcpState, Timer, TimerKind, TupleView};
use twlab::model::{self, CellFacts, DocumentedPrediction, KernelFacts, Prediction};
use twlab::scenario::{ClientPort, Experiment};
use twlab::socket::Family;
use twlab::sysctl::{self, NetSysctls};

/// The old connection's client end and server end.
const CLIENT: &str = "127.0.0.1:40000";
const SERVER: &str = "127.0.0.1:8080";

/// One question for the model.
pub struct Case {
    /// What is being asked, in words.
    pub name: &'static str,
    /// How the client gets its port for the reconnect.
    pub client_port: ClientPort,
    /// The namespace's sysctls, as `sysctl` would print them.
    pub sysctls: &'static [(&'static str, &'static str)],
    /// The client's TIME_WAIT age.
    pub time_wait_age_ms: u32,
}

/// The cases the example prints: the story's fixed-port reconnect with and
/// without timestamps, and a kernel-chosen port whose range is the one port.
pub fn cases() -> Vec<Case> {
    const DEFAULTS: &[(&str, &str)] = &[
        (sysctl::TIMESTAMPS, "1"),
        (sysctl::TW_REUSE, "2"),
        (sysctl::TW_REUSE_DELAY, "1000"),
        (sysctl::PORT_RANGE, "32768\t60999"),
        (sysctl::MAX_TW_BUCKETS, "131072"),
    ];
    vec![
        Case {
            name: "fixed port 40000, timestamps on",
            client_port: ClientPort::Fixed(40000),
            sysctls: DEFAULTS,
            time_wait_age_ms: 10,
        },
        Case {
            name: "fixed port 40000, timestamps off",
            client_port: ClientPort::Fixed(40000),
            sysctls: &[
                (sysctl::TIMESTAMPS, "0"),
                (sysctl::TW_REUSE, "2"),
                (sysctl::TW_REUSE_DELAY, "1000"),
                (sysctl::PORT_RANGE, "32768\t60999"),
                (sysctl::MAX_TW_BUCKETS, "131072"),
            ],
            time_wait_age_ms: 10,
        },
        Case {
            name: "kernel-chosen port, ip_local_port_range = 40000 40000, TIME_WAIT 1.5 s old",
            client_port: ClientPort::Ephemeral,
            sysctls: &[
                (sysctl::TIMESTAMPS, "1"),
                (sysctl::TW_REUSE, "1"),
                (sysctl::TW_REUSE_DELAY, "1000"),
                (sysctl::PORT_RANGE, "40000\t40000"),
                (sysctl::MAX_TW_BUCKETS, "131072"),
            ],
            time_wait_age_ms: 1500,
        },
    ]
}

/// The kernel facts for hand-written sysctls, parsed the way twlab parses
/// a live namespace's (`NetSysctls::from_lookup`).
pub fn kernel(sysctls: &[(&str, &str)]) -> KernelFacts {
    let s = NetSysctls::from_lookup(|name| {
        sysctls
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    })
    .expect("the example's sysctls parse");
    KernelFacts {
        release: "example".into(),
        ..KernelFacts::from_sysctls(&s)
    }
}

/// The socket table as sock_diag would show it: the client's end of the
/// old 4-tuple in TIME_WAIT, `age_ms` into its 60 s; the server's end gone.
pub fn table(age_ms: u32) -> TupleView {
    let client = SockEntry {
        family: Family::V4,
        state: TcpState::TimeWait,
        local: CLIENT.parse().expect("address"),
        peer: SERVER.parse().expect("address"),
        timer: Some(Timer {
            kind: TimerKind::Timewait,
            expires_ms: model::TIMEWAIT_LEN_MS - age_ms,
            retrans: 0,
        }),
        recv_q: 0,
        send_q: 0,
        uid: 0,
        inode: 0,
        v6only: None,
        pid: None,
    };
    TupleView {
        client: Some(client),
        server: None,
    }
}

/// The model's answers for one case: Linux, Windows, BSD/macOS.
pub fn predict(case: &Case) -> (Prediction, DocumentedPrediction, DocumentedPrediction) {
    let client_addr: SocketAddr = CLIENT.parse().expect("address");
    let server_port = SERVER.parse::<SocketAddr>().expect("address").port();
    // The story: SO_REUSEADDR everywhere, the client closed first, the
    // server after it, then the client reconnects.
    let experiment = Experiment {
        client_port: case.client_port,
        ..Experiment::story(Family::V4, server_port, client_addr.port())
    };
    let view = table(case.time_wait_age_ms);
    let kernel = kernel(case.sysctls);
    let facts = CellFacts {
        experiment: &experiment,
        view: &view,
        client_addr,
        kernel: &kernel,
    };
    (
        model::predict_linux(&facts),
        model::predict_windows(&facts),
        model::predict_bsd(&facts),
    )
}

fn main() {
    println!("Old connection {CLIENT} -> {SERVER}; the client holds it in TIME_WAIT.\n");
    for (i, case) in cases().iter().enumerate() {
        let (linux, windows, bsd) = predict(case);
        println!("{}. reconnect, {}", i + 1, case.name);
        println!("   Linux: {} [{}]", linux.outcome.short(), linux.rule);
        println!("   why: {}", linux.explanation);
        if let Some(fix) = &linux.fix {
            println!("   fix: {fix}");
        }
        println!(
            "   Windows ({}): {}",
            windows.label,
            windows.outcome.short()
        );
        println!("   BSD/macOS ({}): {}\n", bsd.label, bsd.outcome.short());
    }
}
