//! `--compare`: the same workload under each applicable mitigation, each in
//! a fresh namespace of its own, run one after the other (in parallel they
//! would share the CPU and distort each other's rates).

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::net::Ipv4Addr;

use super::report::{Limit, LoadReport};
use super::workload::{Mode, Plan, PortChoice};
use crate::error::{Error, Result};
use crate::experiment::Side;
use crate::sysctl::{PortRange, TwReuse};

/// The variants of `base`: itself, then each mitigation that changes
/// something for it. Needs a plan with its own namespace.
pub fn variants(base: &Plan) -> Result<Vec<(String, Plan)>> {
    let Some(_) = &base.netns else {
        return Err(Error::Usage(
            "--compare runs each variant in its own namespace: not with --target".into(),
        ));
    };
    let mut out = vec![("as given".to_string(), base.clone())];
    let mut add = |label: String, f: &dyn Fn(&mut Plan)| {
        let mut p = base.clone();
        f(&mut p);
        if p != *base {
            out.push((label, p));
        }
    };
    for r in [TwReuse::Off, TwReuse::On, TwReuse::LoopbackOnly] {
        add(format!("tcp_tw_reuse={}", r.value()), &|p| {
            if let Some(n) = p.netns.as_mut() {
                n.tw_reuse = r;
            }
        });
    }
    // The widest range that keeps the privileged ports out.
    let wide = PortRange {
        low: 1024,
        high: 65535,
    };
    add(format!("range {}-{}", wide.low, wide.high), &|p| {
        if let Some(n) = p.netns.as_mut() {
            n.port_range = wide;
        }
    });
    add("server closes first".into(), &|p| {
        p.workload.closer = Side::Server
    });
    if let Mode::Churn { concurrency, .. } = base.workload.mode {
        add(format!("pool {concurrency} (≥ concurrency)"), &|p| {
            if let Mode::Churn { pool, .. } = &mut p.workload.mode {
                *pool = concurrency;
            }
        });
    }
    add("SO_LINGER 0 (RST)".into(), &|p| {
        p.workload.linger_zero = true
    });
    let four: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    add("4 source addresses".into(), &|p| {
        if p.workload.sources.len() < 4 {
            p.workload.sources = four.clone();
            if p.workload.port_choice == PortChoice::Kernel {
                p.workload.port_choice = PortChoice::BindNoPort;
            }
        }
    });
    if base.workload.port_choice == PortChoice::Bind {
        add("IP_BIND_ADDRESS_NO_PORT".into(), &|p| {
            p.workload.port_choice = PortChoice::BindNoPort
        });
    }
    Ok(out)
}

fn limit_cell(l: &Limit) -> String {
    match l {
        Limit::Rate { per_s, .. } => format!("{per_s:.0} conn/s"),
        Limit::Held { connections, .. } => format!("{connections} held"),
        Limit::Unbounded { .. } => "none".into(),
    }
}

fn uses_per_s(r: &LoadReport) -> f64 {
    r.uses as f64 / r.elapsed_s.max(1e-9)
}

/// The reports as one table, fewest errors first, then most uses per
/// second (a pooled connection is used many times for one connect).
pub fn table(reports: &[LoadReport]) -> String {
    let mut v: Vec<&LoadReport> = reports.iter().collect();
    v.sort_by(|a, b| {
        a.exhaustion_errors
            .cmp(&b.exhaustion_errors)
            .then(a.errors.cmp(&b.errors))
            .then(uses_per_s(b).total_cmp(&uses_per_s(a)))
    });
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "variant",
        "uses/s",
        "conn/s",
        "conn/s after exhaustion",
        "errors",
        "no-port errors",
        "first exhaustion",
        "peak TIME_WAIT",
        "predicted limit",
        "cost",
    ]);
    for r in v {
        let cost = if r.plan.workload.linger_zero {
            format!(
                "{} RSTs sent: the peer sees a reset, data in flight is lost",
                r.counters.get("Tcp:OutRsts").copied().unwrap_or(0)
            )
        } else {
            String::new()
        };
        t.add_row([
            r.label.clone(),
            format!("{:.0}", uses_per_s(r)),
            format!("{:.0}", r.conn_per_s),
            // The run's average hides the limit when ports ran out early:
            // this is the rate the predicted limit is about.
            r.conn_per_s_after_exhaustion
                .map_or("-".into(), |c| format!("{c:.0}")),
            r.errors.to_string(),
            r.exhaustion_errors.to_string(),
            r.first_exhaustion.map_or("-".into(), |f| {
                format!("{:.2} s / {} conns", f.after_s, f.after_connects)
            }),
            r.peak_time_wait.to_string(),
            limit_cell(&r.predicted),
            cost,
        ]);
    }
    format!("{t}\n")
}
