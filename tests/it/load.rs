//! `twlab load` against the rules: each run in a fresh namespace of its own
//! with a 100-port range, so ports run out in milliseconds. Every expected
//! value comes from the range sizes and the rule, never from the output.

use crate::common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use twlab::experiment::Side;
use twlab::load::{
    self, LoadReport, Mode, NsSettings, Plan, PortChoice, Rate, Stop, Target, Workload,
};
use twlab::sysctl::{PortRange, TwReuse};

const RANGE: PortRange = PortRange {
    low: 40000,
    high: 40099,
};

fn dest(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// Churn, one worker, client closes first, tcp_tw_reuse 0, 100 ports.
fn plan(mode: Mode, count: Option<u64>, duration_s: f64) -> Plan {
    let mut plan = Plan::new(
        Workload {
            workers: 1,
            mode,
            rate: Rate::Max,
            closer: Side::Client,
            linger_zero: false,
            sources: vec![],
            destinations: vec![dest(5000)],
            port_choice: PortChoice::Kernel,
        },
        Stop {
            duration: Duration::from_secs_f64(duration_s),
            count,
            on_first_error: false,
        },
        Target::InProcess,
        Some(NsSettings {
            port_range: RANGE,
            tw_reuse: TwReuse::Off,
            ..NsSettings::default()
        }),
    );
    plan.sample_every = Duration::from_millis(100);
    plan
}

fn churn(concurrency: u32, pool: u32, requests: u32) -> Mode {
    Mode::Churn {
        concurrency,
        pool,
        requests,
    }
}

fn run(p: &Plan) -> LoadReport {
    load::run(p, "test", Arc::new(|_: &load::Sample| {})).expect("load run")
}

/// The settings of the run's own namespace ([`plan`] has one).
fn ns(p: &mut Plan) -> &mut NsSettings {
    p.netns.as_mut().expect("the plan's namespace")
}

/// Run `p` toward 127.0.0.1:5001, where a server accepts nothing and
/// never closes (the kernel completes handshakes into the listen queue;
/// no FIN ever comes), in a namespace of the test's own that the run
/// shares: its report and how long the run took.
fn against_a_silent_server(mut p: Plan) -> (LoadReport, Duration) {
    common::in_netns(&[], move || {
        let _silent = std::net::TcpListener::bind("127.0.0.1:5001").unwrap();
        p.workload.destinations = vec![dest(5001)];
        p.target = Target::External;
        p.netns = None;
        p.count_free_ports = false;
        let start = std::time::Instant::now();
        let r = run(&p);
        (r, start.elapsed())
    })
}

/// `twlab load` on the 100-port range without tcp_tw_reuse, with `args`
/// more: it succeeds (its stderr shown if not).
fn load_cli(args: &[&str]) -> std::process::Output {
    let mut all = vec!["load", "--port-range", "40000-40099", "--tw-reuse", "0"];
    all.extend(args);
    let o = common::run(&all);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn ok(test: &str) -> bool {
    common::netns_or_skip(test)
}

#[test]
fn a_100_port_range_without_tw_reuse_fails_near_the_predicted_count() {
    if !ok("a_100_port_range_without_tw_reuse_fails_near_the_predicted_count") {
        return;
    }
    let p = plan(churn(1, 0, 1), Some(300), 10.0);
    let r = run(&p);
    let predicted = RANGE.len() as f64;
    let first = r.first_exhaustion.expect("ports ran out").after_connects as f64;
    assert!(
        (first - predicted).abs() <= predicted * 0.10,
        "first EADDRNOTAVAIL after {first} connections, predicted {predicted}\n{}",
        r.text()
    );
    assert!(
        matches!(r.predicted, load::Limit::Rate { first_failure_after, .. } if first_failure_after == RANGE.len() as u64)
    );
    assert!(
        r.errors_by_kind.contains_key("connect EADDRNOTAVAIL"),
        "{}",
        r.text()
    );
}

#[test]
fn a_pool_as_large_as_the_concurrency_never_runs_out_where_a_smaller_one_does() {
    if !ok("a_pool_as_large_as_the_concurrency_never_runs_out_where_a_smaller_one_does") {
        return;
    }
    // 100 rounds of 8: a pool of 4 closes 4 per round, 400 > 100 ports.
    let uses = 800;
    let full = run(&plan(churn(8, 8, 1), Some(uses), 20.0));
    assert_eq!(full.errors, 0, "{}", full.text());
    assert_eq!(full.uses, uses);
    assert_eq!(
        full.connects,
        8,
        "only the warm-up connects\n{}",
        full.text()
    );
    let small = run(&plan(churn(8, 4, 1), Some(uses), 20.0));
    assert!(small.exhaustion_errors > 0, "{}", small.text());
}

#[test]
fn the_server_closing_first_does_not_exhaust_client_ports() {
    if !ok("the_server_closing_first_does_not_exhaust_client_ports") {
        return;
    }
    let n = 5 * RANGE.len() as u64;
    for requests in [0, 1] {
        let mut p = plan(churn(1, 0, requests), Some(n), 20.0);
        p.workload.closer = Side::Server;
        let r = run(&p);
        assert_eq!(r.errors, 0, "requests {requests}\n{}", r.text());
        assert_eq!(r.connects, n, "{}", r.text());
        // Same workload, client first: runs out at the range.
        p.workload.closer = Side::Client;
        let c = run(&p);
        assert!(c.exhaustion_errors > 0, "{}", c.text());
    }
}

#[test]
fn held_connections_run_out_exactly_at_the_usable_ports() {
    if !ok("held_connections_run_out_exactly_at_the_usable_ports") {
        return;
    }
    let mut p = plan(Mode::Held { connections: 1000 }, None, 0.5);
    let reserved = PortRange {
        low: 40010,
        high: 40019,
    };
    ns(&mut p).reserved_ports = format!("{}-{}", reserved.low, reserved.high);
    let usable = (RANGE.len() - reserved.len()) as u64;
    let r = run(&p);
    assert_eq!(r.uses, usable, "{}", r.text());
    assert_eq!(
        r.first_exhaustion.map(|f| f.after_connects),
        Some(usable),
        "{}",
        r.text()
    );
    assert!(
        matches!(r.predicted, load::Limit::Held { connections, .. } if connections == usable),
        "{:?}",
        r.predicted
    );
}

#[test]
fn bind_port_zero_runs_out_across_destinations_where_bind_address_no_port_does_not() {
    if !ok("bind_port_zero_runs_out_across_destinations_where_bind_address_no_port_does_not") {
        return;
    }
    let dests = vec![dest(5000), dest(5001), dest(5002)];
    let want = 250u64; // more than one range, less than three
    let mut p = plan(
        Mode::Held {
            connections: want as u32,
        },
        None,
        0.5,
    );
    p.workload.destinations = dests.clone();
    p.workload.sources = vec![Ipv4Addr::LOCALHOST];
    p.workload.port_choice = PortChoice::Bind;
    let bind = run(&p);
    assert_eq!(bind.uses, RANGE.len() as u64, "{}", bind.text());
    assert!(
        bind.errors_by_kind.contains_key("bind EADDRINUSE"),
        "{}",
        bind.text()
    );
    p.workload.port_choice = PortChoice::BindNoPort;
    let no_port = run(&p);
    assert_eq!(no_port.errors, 0, "{}", no_port.text());
    assert_eq!(no_port.uses, want.min(3 * RANGE.len() as u64));
}

#[test]
fn a_second_source_address_doubles_the_held_connection_limit() {
    if !ok("a_second_source_address_doubles_the_held_connection_limit") {
        return;
    }
    let mut p = plan(Mode::Held { connections: 1000 }, None, 0.5);
    p.workload.port_choice = PortChoice::BindNoPort;
    p.workload.sources = vec![Ipv4Addr::new(127, 0, 0, 1)];
    let one = run(&p);
    p.workload.sources.push(Ipv4Addr::new(127, 0, 0, 2));
    let two = run(&p);
    assert_eq!(one.uses, RANGE.len() as u64, "{}", one.text());
    assert_eq!(two.uses, 2 * RANGE.len() as u64, "{}", two.text());
}

#[test]
fn tw_reuse_lifts_the_rate_limit_on_loopback() {
    if !ok("tw_reuse_lifts_the_rate_limit_on_loopback") {
        return;
    }
    // With tcp_tw_reuse 1 and a 1 ms delay (Linux 6.14+), a port in
    // TIME_WAIT is taken over after 1 ms: 300 uses on 100 ports succeed.
    if twlab::sysctl::read(twlab::sysctl::TW_REUSE_DELAY).is_none() {
        common::skip(
            "tw_reuse_lifts_the_rate_limit_on_loopback: no tcp_tw_reuse_delay (before 6.14)",
        );
        return;
    }
    // Paced at 2000/s, a port comes round again every 50 ms, long after
    // its 1 ms delay.
    let mut p = plan(churn(1, 0, 0), Some(300), 10.0);
    p.workload.rate = Rate::PerSecond(2000.0);
    ns(&mut p).tw_reuse = TwReuse::On;
    ns(&mut p).tw_reuse_delay_ms = Some(1);
    let r = run(&p);
    assert!(
        matches!(r.predicted, load::Limit::Rate { per_s, .. } if per_s == RANGE.len() as f64 * 1000.0)
    );
    assert_eq!(r.connects, 300, "{}", r.text());
}

#[test]
fn the_plot_is_svg_with_a_row_per_run_and_the_predicted_limit() {
    if !ok("the_plot_is_svg_with_a_row_per_run_and_the_predicted_limit") {
        return;
    }
    let a = run(&plan(churn(1, 0, 0), None, 0.5));
    let mut p = plan(churn(1, 0, 0), None, 0.5);
    p.workload.closer = Side::Server;
    let b = load::run(&p, "server first", Arc::new(|_: &load::Sample| {})).unwrap();
    assert!(a.samples.len() >= 3, "samples every 100 ms over 0.5 s");
    let dir = common::fresh_dir("load-plot");
    let f = dir.join("p.svg");
    let limits: Vec<(f64, u64)> = [&a, &b]
        .iter()
        .filter_map(|r| match r.predicted {
            load::Limit::Rate {
                per_s,
                first_failure_after,
                ..
            } => Some((per_s, first_failure_after)),
            _ => None,
        })
        .collect();
    let w = load::plot::svg(&[a, b], &f).unwrap();
    assert!(!w.replaced);
    let svg = std::fs::read_to_string(&f).unwrap();
    // A second plot to the same name replaces it, and says so.
    assert!(load::plot::svg(&[], &f).unwrap().replaced);
    let _ = std::fs::remove_dir_all(&dir);
    assert_well_formed(&svg);
    // A row of 3 panels per run, each its own 2-pixel polyline (grid and
    // limit lines are 1 pixel): 6 series that cannot sit on each other.
    let series = svg
        .split("<polyline")
        .filter(|p| p.contains(r#"stroke-width="2""#))
        .count();
    assert_eq!(series, 6, "{svg}");
    // Each row is titled with its run: the legend, outside the data.
    assert!(svg.contains("[server first] TIME_WAIT sockets"), "{svg}");
    // The model's limits, drawn and labelled, for each run that has one.
    assert!(
        !limits.is_empty(),
        "a churn run into one port range predicts a rate"
    );
    for (per_s, ports) in limits {
        assert!(
            svg.contains(&format!("predicted limit {per_s:.0}/s")),
            "{svg}"
        );
        assert!(svg.contains(&format!("predicted: {ports} ports")), "{svg}");
    }
}

/// A small XML check: one root `svg`, every tag closed in order.
fn assert_well_formed(svg: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(i) = rest.find('<') {
        let j = rest[i..].find('>').expect("unclosed tag") + i;
        let tag = &rest[i + 1..j];
        rest = &rest[j + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            if stack.is_empty() {
                roots += 1;
            }
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        } else if stack.is_empty() {
            roots += 1;
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1);
    assert!(svg.trim_start().starts_with("<svg") || svg.contains("<svg"));
}

#[test]
fn the_cli_prints_a_json_time_series_and_a_report() {
    if !ok("the_cli_prints_a_json_time_series_and_a_report") {
        return;
    }
    let o = load_cli(&["--duration", "0.6", "--interval", "100", "--json"]);
    let lines = common::json_lines(&o);
    let samples: Vec<_> = lines.iter().filter(|l| l["type"] == "sample").collect();
    // A series: at least one sample during the run and the final one, in
    // time order. (How many fit in 0.6 s depends on the machine's load: a
    // count of 6 at 100 ms is not a property of twlab; 2 samples were seen
    // on a loaded 2-core machine.)
    assert!(samples.len() >= 2, "{lines:?}");
    assert!(
        samples
            .windows(2)
            .all(|w| w[0]["t_s"].as_f64() < w[1]["t_s"].as_f64()),
        "{lines:?}"
    );
    assert!(
        samples
            .iter()
            .all(|s| s["time_wait"].is_u64() && s["conn_per_s"].is_number())
    );
    let report = lines
        .iter()
        .find(|l| l["type"] == "report")
        .expect("a report line");
    assert_eq!(
        report["first_exhaustion"]["after_connects"],
        RANGE.len() as u64
    );
    assert_eq!(report["peak_time_wait"], RANGE.len() as u64);
}

#[test]
fn compare_runs_each_mitigation_and_ranks_them() {
    if !ok("compare_runs_each_mitigation_and_ranks_them") {
        return;
    }
    let o = load_cli(&[
        "--duration",
        "2",
        "--count",
        "300",
        "--concurrency",
        "2",
        "--compare",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    for v in [
        "as given",
        "tcp_tw_reuse=1",
        "server closes first",
        "pool 2",
        "SO_LINGER 0",
        "4 source addresses",
        "range 1024-65535",
    ] {
        assert!(out.contains(v), "no row {v}:\n{out}");
    }
    // Fewest errors first: a mitigation that frees ports ranks above the
    // workload as given, which runs out at 100 ports.
    let pos = |s: &str| out.find(s).unwrap();
    assert!(pos("server closes first") < pos("as given"), "{out}");
}

#[test]
fn the_socket_port_range_option_narrows_the_held_limit() {
    if !ok("the_socket_port_range_option_narrows_the_held_limit") {
        return;
    }
    // IP_LOCAL_PORT_RANGE arrived in Linux 6.3; older kernels refuse it.
    let narrow = PortRange {
        low: 40000,
        high: 40039,
    };
    let mut p = plan(Mode::Held { connections: 1000 }, None, 0.5);
    p.workload.port_choice = PortChoice::SocketRange(narrow);
    let r = run(&p);
    if r.errors_by_kind.keys().any(|k| k.starts_with("setsockopt")) {
        common::skip("the_socket_port_range_option_narrows_the_held_limit: no IP_LOCAL_PORT_RANGE");
        return;
    }
    assert_eq!(r.uses, narrow.len() as u64, "{}", r.text());
}

#[test]
fn a_full_time_wait_table_frees_ports_at_once_and_counts_the_overflow() {
    if !ok("a_full_time_wait_table_frees_ports_at_once_and_counts_the_overflow") {
        return;
    }
    let buckets = 10u64;
    let n = 3 * RANGE.len() as u64;
    let mut p = plan(churn(1, 0, 0), Some(n), 10.0);
    // Paced, so the server has closed its end (and the client's FIN_WAIT2
    // has ended) before a port comes round again.
    p.workload.rate = Rate::PerSecond(2000.0);
    ns(&mut p).max_tw_buckets = Some(buckets as u32);
    let r = run(&p);
    assert!(
        matches!(r.predicted, load::Limit::Unbounded { .. }),
        "{:?}",
        r.predicted
    );
    // More connections than ports: each port came round again, which a
    // TIME_WAIT kept for its 60 s would have stopped at the range's size.
    // (Not "no error at all": on a busy machine the server's close can lag
    // the pacing, and a port whose last connection is still FIN_WAIT2 when
    // it comes round fails with EADDRNOTAVAIL; seen under CI load. That
    // port is held by a live connection, not by a TIME_WAIT.)
    assert!(r.uses > RANGE.len() as u64, "{}", r.text());
    assert!(
        r.errors_by_kind
            .keys()
            .all(|k| k == "connect EADDRNOTAVAIL"),
        "{}",
        r.text()
    );
    assert!(r.peak_time_wait <= buckets, "{}", r.text());
    // Every close past the first `buckets` overflowed (tcp_time_wait()),
    // but the last one, which may not have reached TIME_WAIT yet.
    assert!(
        r.counters
            .get("TcpExt:TCPTimeWaitOverflow")
            .copied()
            .unwrap_or(0)
            >= r.uses.saturating_sub(buckets + 1),
        "{}",
        r.text()
    );
}

/// A server that accepts nothing and never closes: the worker's wait for
/// its FIN ends with the run (each worker thread ticks, so the blocking
/// read notices the run's end within the tick), not after the 5 s bound on
/// one wait, and not never.
#[test]
fn a_silent_server_holds_a_worker_only_until_the_run_ends() {
    if !ok("a_silent_server_holds_a_worker_only_until_the_run_ends") {
        return;
    }
    let mut p = plan(churn(1, 0, 0), None, 0.5);
    p.workload.closer = Side::Server;
    let (r, took) = against_a_silent_server(p);
    assert_eq!(r.connects, 1, "one connection, then the wait\n{}", r.text());
    assert!(
        took < Duration::from_secs(3),
        "the run of 0.5 s took {took:?}"
    );
}

/// A keep-alive pool as large as the concurrency opens no connection after
/// the first round: a run bounded by its duration alone still ends on time
/// (the worker reads the clock itself when no connect() did).
#[test]
fn a_run_served_from_the_pool_ends_at_its_duration() {
    if !ok("a_run_served_from_the_pool_ends_at_its_duration") {
        return;
    }
    let p = plan(churn(4, 4, 1), None, 0.3);
    let start = std::time::Instant::now();
    let r = run(&p);
    let took = start.elapsed();
    assert_eq!(r.connects, 4, "{}", r.text());
    assert!(r.uses > 4, "{}", r.text());
    assert!(took < Duration::from_secs(3), "a 0.3 s run took {took:?}");
}

/// `--plot FILE.png` is a PNG (signature, then a stream the `png` crate
/// decodes whole: every chunk's CRC and the zlib data checked), a row of
/// panels per run, with the predicted limit drawn in red (the data lines
/// are Palette99 colours, the grid grey).
#[test]
fn the_plot_as_png_decodes_with_a_row_per_run_and_the_red_limit_line() {
    if !ok("the_plot_as_png_decodes_with_a_row_per_run_and_the_red_limit_line") {
        return;
    }
    let a = run(&plan(churn(1, 0, 0), None, 0.3));
    assert!(
        matches!(a.predicted, load::Limit::Rate { .. }),
        "{:?}",
        a.predicted
    );
    let one = load::plot::render(std::slice::from_ref(&a), load::plot::Format::Png).unwrap();
    let two = load::plot::render(&[a.clone(), a], load::plot::Format::Png).unwrap();
    let decode = |bytes: &[u8]| {
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "no PNG signature");
        let mut r = png::Decoder::new(bytes).read_info().expect("a PNG header");
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).expect("the image data decodes");
        buf.truncate(info.buffer_size());
        (info.width, info.height, info.color_type, buf)
    };
    let (w1, h1, color, px) = decode(&one);
    let (w2, h2, _, _) = decode(&two);
    assert!(w1 > 0 && h1 > 0);
    assert_eq!((w2, h2), (w1, 2 * h1), "a row of panels per run");
    assert_eq!(color, png::ColorType::Rgb);
    // plotters' RED is (255, 0, 0): only the predicted limit's line and
    // label use it.
    let red = px
        .chunks_exact(3)
        .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
        .count();
    assert!(red > 100, "{red} red pixels: no predicted limit drawn");
}

/// An extension that is neither .svg nor .png is refused as the
/// arguments are parsed: exit 2 and nothing run (no line of a report).
#[test]
fn a_plot_file_that_is_neither_svg_nor_png_is_refused_before_the_run() {
    for f in ["x.jpg", "x", "x.svg.gz"] {
        let o = common::run(&["load", "--duration", "30s", "--plot", f]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "--plot {f}: {err}");
        assert!(err.contains(".svg or .png"), "--plot {f}: {err}");
        assert!(
            o.stdout.is_empty(),
            "--plot {f} ran: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// A reply still awaited when the run ends is the run's end, not an error
/// of the workload: it used to be counted and printed as "send/recv E0"
/// (an error without errno). The server accepts nothing, so the one
/// request is never answered and the worker waits for it until the end.
#[test]
fn a_reply_cut_off_by_the_runs_end_is_not_an_error() {
    if !ok("a_reply_cut_off_by_the_runs_end_is_not_an_error") {
        return;
    }
    let (r, _) = against_a_silent_server(plan(churn(1, 0, 1), None, 0.4));
    assert_eq!(r.connects, 1, "one connection, then the wait\n{}", r.text());
    assert_eq!(r.uses, 0, "{}", r.text());
    assert_eq!(r.errors, 0, "{}", r.text());
    assert!(r.errors_by_kind.is_empty(), "{:?}", r.errors_by_kind);
}
