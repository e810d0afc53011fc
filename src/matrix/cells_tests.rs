//! Unit tests of the cell builder: the default matrix pinned by its
//! documented pruning, the axes, the limits and the sysctl allowlist.

use super::*;
use crate::matrix::held_by_open_descriptor;

fn sel(args: &[&str]) -> Selection {
    Selection::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
}

fn none() -> SocketOpts {
    SocketOpts::default()
}

/// The default matrix, counted and spot-checked from the documented
/// pruning rather than from the builder.
#[test]
fn default_matrix_size_and_order_follow_the_documented_pruning() {
    let cells = build_cells(&Selection::default(), &test_host(), true).unwrap();
    // close × when: FIN closes (2) × 3 whens + RST closes (2) × 2 whens.
    let close_when = 2 * 3 + 2 * 2;
    let fams = 2;
    let sysctls = 2 * 3; // reconnect: tcp_timestamps × tcp_tw_reuse
    let opt_sets = 5; // RA old×new, plus RP on both
    let reconnect_fixed = close_when * fams * opt_sets * sysctls;
    let reconnect_kernel_chosen = 2 * close_when * fams * sysctls; // no options
    let rebind = close_when * 3 * fams * opt_sets;
    let restart = close_when * fams * opt_sets; // fixed port only
    assert_eq!(
        cells.len(),
        reconnect_fixed + reconnect_kernel_chosen + rebind + restart
    );
    assert_eq!(cells.len(), 1240);
    assert!(cells.iter().enumerate().all(|(i, c)| c.id == i));

    let c = &cells[0].experiment;
    assert_eq!(
        (c.next, c.close, c.when, c.client_port, c.family),
        (
            NextStep::Reconnect,
            Close::CLIENT,
            When::AtOnce,
            ClientPort::Fixed(CLIENT_PORT),
            Family::V4
        )
    );
    assert_eq!((c.client, c.listener, c.new_opts), (none(), none(), none()));
    assert_eq!(c.server_port, SERVER_PORT);
    assert_eq!(cells[0].sysctl_label, "ts=0 tw_reuse=0");
    assert_eq!(
        cells[0].sysctls,
        vec![
            Sysctl::new(TIMESTAMPS, "0"),
            Sysctl::new(TW_REUSE, "0"),
            Sysctl::new(TW_REUSE_DELAY, "1000"),
            Sysctl::new(PORT_RANGE, "32768 60999"),
            Sysctl::new(MAX_TW_BUCKETS, "131072"),
            Sysctl::new(FIN_TIMEOUT, "60"),
        ]
    );
    // The sysctls vary fastest: timestamps, then tw_reuse.
    assert_eq!(cells[1].sysctl_label, "ts=0 tw_reuse=1");
    assert_eq!(cells[5].sysctl_label, "ts=1 tw_reuse=2");
    // Then the options: old client off, new socket SO_REUSEADDR.
    let c = &cells[6].experiment;
    assert!(!c.client.reuseaddr && c.new_opts.reuseaddr && !c.new_opts.reuseport);
    // Fixed v4 and v6 (5 options × 6 sysctls each), then ephemeral,
    // with no options.
    let c = &cells[60];
    assert_eq!(c.experiment.client_port, ClientPort::Ephemeral);
    assert_eq!(c.experiment.family, Family::V4);
    assert_eq!(c.experiment.new_opts, none());
    assert_eq!(c.sysctl_label, "ts=0 tw_reuse=0");
    assert_eq!(cells[72].experiment.client_port, ClientPort::BindNoPort);
    // The first rebind runs with the host's sysctls.
    let c = &cells[reconnect_fixed + reconnect_kernel_chosen];
    assert_eq!(c.experiment.next, NextStep::Rebind);
    assert_eq!(c.experiment.close, Close::CLIENT);
    assert_eq!(c.sysctl_label, "host");
    assert_eq!(c.sysctls[0], Sysctl::new(TIMESTAMPS, "1"));
    assert_eq!(c.sysctls[1], Sysctl::new(TW_REUSE, "2"));
    // The last: restart-listener after a server RST, SO_REUSEPORT on
    // both listeners.
    let c = &cells[1239].experiment;
    assert_eq!(
        (c.next, c.close, c.when, c.client_port, c.family),
        (
            NextStep::RestartListener,
            Close::SERVER_RST,
            When::AfterPeer,
            ClientPort::Fixed(CLIENT_PORT),
            Family::V6
        )
    );
    assert!(c.listener.reuseport && c.new_opts.reuseport && c.client == none());
}

#[test]
fn named_option_factors_run_their_product_and_the_host_fallback_picks_ports() {
    let cells = build_cells(
        &sel(&[
            "next=rebind",
            "close=client",
            "when=at-once",
            "family=ipv4",
            "client-port=fixed",
            "old-client-reuseport=on,off",
            "new-reuseaddr=off,on",
        ]),
        &test_host(),
        false,
    )
    .unwrap();
    let got: Vec<(bool, bool, SocketOpts)> = cells
        .iter()
        .map(|c| {
            let x = &c.experiment;
            (x.client.reuseport, x.new_opts.reuseaddr, x.listener)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (true, false, none()),
            (true, true, none()),
            (false, false, none()),
            (false, true, none()),
        ]
    );
    for c in &cells {
        assert_eq!(c.experiment.client_port, ClientPort::Fixed(0));
        assert_eq!(c.experiment.server_port, 0);
        assert_eq!(c.sysctl_label, "host");
    }
}

/// Every factor is an axis of the product, once (the six option
/// factors through the one "options" axis).
#[test]
fn the_axes_are_the_factors() {
    let is_option = |n: &str| n.starts_with("old-") || n.starts_with("new-");
    let mut factors: Vec<&str> = (crate::matrix::FACTORS.iter())
        .map(|f| f.name)
        .filter(|n| !is_option(n))
        .chain(["options"])
        .collect();
    let mut axes: Vec<&str> = AXES.iter().map(|(n, _)| *n).collect();
    factors.sort();
    axes.sort();
    assert_eq!(axes, factors);
    assert_eq!(
        crate::matrix::FACTORS
            .iter()
            .filter(|f| is_option(f.name))
            .count(),
        6
    );
}

#[test]
fn missing_delay_sysctl_is_a_clear_error() {
    let mut h = test_host();
    h.tw_reuse_delay_ms = None;
    let e = build_cells(&sel(&["tcp-tw-reuse-delay=1"]), &h, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("this kernel") && e.contains("has no net.ipv4.tcp_tw_reuse_delay"),
        "{e}"
    );
}

#[test]
fn port_range_one_uses_the_cells_client_port() {
    let s = sel(&[
        "port-range=one",
        "next=reconnect",
        "client-port=ephemeral,fixed",
    ]);
    let cells = build_cells(&s, &test_host(), true).unwrap();
    assert!(!cells.is_empty());
    for c in cells {
        let r = c.sysctls.iter().find(|s| s.name == PORT_RANGE).unwrap();
        let p = if matches!(c.experiment.client_port, ClientPort::Fixed(_)) {
            CLIENT_PORT
        } else {
            ONE_PORT
        };
        assert_eq!(r.value, format!("{p} {p}"));
        assert!(c.sysctl_label.ends_with(&format!("range={p}")));
    }
}

#[test]
fn open_descriptor_holders() {
    let c = build_cells(
        &sel(&["next=reconnect", "close=server", "when=at-once"]),
        &test_host(),
        true,
    )
    .unwrap();
    assert!(c.iter().all(|c| held_by_open_descriptor(&c.experiment)));
    let c = build_cells(
        &sel(&["next=reconnect", "close=client"]),
        &test_host(),
        true,
    )
    .unwrap();
    assert!(c.iter().all(|c| !held_by_open_descriptor(&c.experiment)));
}

/// The count walks the same axes as the build, and stops past the
/// limit.
#[test]
fn cells_are_counted_before_they_are_built() {
    let host = test_host();
    for args in [&[][..], &["next=reconnect", "tcp-tw-reuse=0,1"][..]] {
        let sel = sel(args);
        let n = build_cells(&sel, &host, true).unwrap().len();
        assert_eq!(count_cells(&sel, &host, usize::MAX), n);
        assert_eq!(count_cells(&sel, &host, 10), 11);
        assert!(check_size(&sel, &host, n).is_ok());
        assert!(matches!(
            check_size(&sel, &host, n - 1),
            Err(Error::Usage(_))
        ));
    }
    let many: Vec<String> = (1000..2000).map(|n| n.to_string()).collect();
    let big = sel(&[&format!("tcp-max-tw-buckets={}", many.join(","))]);
    assert!(check_size(&big, &host, MAX_CELLS).is_err());
}

/// The worker writes only the sysctls a cell may set.
#[test]
fn only_the_matrix_sysctls_pass_the_worker() {
    let mut cells = build_cells(&sel(&["next=rebind"]), &test_host(), true).unwrap();
    assert!(check_sysctl_names(&cells).is_ok());
    cells[0]
        .sysctls
        .push(Sysctl::new("kernel.hostname", "pwned"));
    let e = check_sysctl_names(&cells).unwrap_err().to_string();
    assert!(
        e.contains("refusing to set sysctl 'kernel.hostname'"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);
}
