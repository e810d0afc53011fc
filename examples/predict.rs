//! `cargo run --example predict`: the rule model as a library, no sockets
//! and no command line. A socket table (one client TIME_WAIT for a 4-tuple,
//! `SockEntry::time_wait`) and the namespace's sysctls
//! (`NetSysctls::linux_defaults()` and a change) are written by hand; the model predicts what
//! a reconnect would do under each setting and says why, and what Windows
//! and BSD/macOS would do instead.

use std::net::SocketAddr;
use std::time::Duration;
use twlab::diag::{SockEntry, TupleView};
use twlab::experiment::{ClientPort, Experiment};
use twlab::model::{self, CellFacts, DocumentedPrediction, KernelFacts, Prediction};
use twlab::socket::Family;
use twlab::sysctl::{NetSysctls, TwReuse};

/// The old connection's client end and server end.
const CLIENT: &str = "127.0.0.1:40000";
const SERVER: &str = "127.0.0.1:8080";

/// One question for the model.
pub struct Case {
    /// What is being asked, in words.
    pub name: &'static str,
    /// How the client gets its port for the reconnect.
    pub client_port: ClientPort,
    /// The namespace's sysctls.
    pub sysctls: NetSysctls,
    /// The client's TIME_WAIT age.
    pub time_wait_age: Duration,
}

/// The cases the example prints: the story's fixed-port reconnect with and
/// without timestamps, and a kernel-chosen port whose range is the one port.
pub fn cases() -> Vec<Case> {
    let young = Duration::from_millis(10);
    vec![
        Case {
            name: "fixed port 40000, timestamps on",
            client_port: ClientPort::Fixed(40000),
            sysctls: NetSysctls::linux_defaults(),
            time_wait_age: young,
        },
        Case {
            name: "fixed port 40000, timestamps off",
            client_port: ClientPort::Fixed(40000),
            sysctls: NetSysctls::linux_defaults().with_timestamps(false),
            time_wait_age: young,
        },
        Case {
            name: "kernel-chosen port, ip_local_port_range = 40000 40000, TIME_WAIT 1.5 s old",
            client_port: ClientPort::Ephemeral,
            sysctls: NetSysctls::linux_defaults()
                .with_tw_reuse(TwReuse::On)
                .with_port_range(40000, 40000),
            time_wait_age: Duration::from_millis(1500),
        },
    ]
}

/// The socket table as sock_diag would show it: the client's end of the
/// old 4-tuple in TIME_WAIT, `age` into its 60 s; the server's end gone.
pub fn table(age: Duration) -> TupleView {
    let left = Duration::from_millis(u64::from(model::TIMEWAIT_LEN_MS)) - age;
    TupleView {
        client: Some(SockEntry::time_wait(addr(CLIENT), addr(SERVER), left)),
        server: None,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
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
    let view = table(case.time_wait_age);
    let kernel = KernelFacts {
        release: "example".into(),
        ..KernelFacts::from_sysctls(&case.sysctls)
    };
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
