//! The "two sockets on one port" family: every [`PairCase`] run on real
//! sockets, each in a fresh network namespace, beside the model's
//! prediction ([`predict_pair`]) and the Windows and BSD/macOS expectations.
//!
//! It has its own small parallel loop (the TIME_WAIT matrix's cells are a
//! different type): workers take cells from a shared counter, and each cell
//! gets a fresh namespace with its `net.ipv6.bindv6only`.

#[cfg(target_os = "linux")]
pub mod group;
pub mod observe;

use crate::error::Result;
use crate::model::pairs::{
    FirstState, PairAddr, PairCase, PairPrediction, PairSocket, Uid, predict_pair,
};
use crate::model::pairs_documented::{DocumentedPair, predict_pair_bsd, predict_pair_windows};
use crate::netns::{self, Sysctl};
use crate::socket::V6Only;
pub use observe::Observed;
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which cells to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// Also the other-uid cells (needs root to change the fsuid).
    pub other_uid: bool,
    /// The `net.ipv6.bindv6only` values.
    pub bindv6only: &'static [bool],
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            other_uid: true,
            bindv6only: &[false, true],
        }
    }
}

/// The addresses a socket of the family binds, with its IPV6_V6ONLY choice.
pub const ADDRESSES: [(PairAddr, V6Only); 7] = [
    (PairAddr::V4Any, V6Only::System),
    (PairAddr::V4Loopback, V6Only::System),
    (PairAddr::V6Any, V6Only::System),
    (PairAddr::V6Any, V6Only::On),
    (PairAddr::V6Any, V6Only::Off),
    (PairAddr::V6Loopback, V6Only::System),
    (PairAddr::V4Mapped, V6Only::System),
];

/// Every cell of the selection.
pub fn cells(sel: Selection) -> Vec<PairCase> {
    let bools = [false, true];
    let uids: &[Uid] = if sel.other_uid {
        &[Uid::Same, Uid::Other]
    } else {
        &[Uid::Same]
    };
    let mut v = Vec::new();
    for &bindv6only in sel.bindv6only {
        for state in FirstState::ALL {
            for (a1, v1) in ADDRESSES {
                for (a2, v2) in ADDRESSES {
                    for (ra1, ra2, rp1, rp2) in quads(bools) {
                        for &uid in uids {
                            let s = |addr, v6only, reuseaddr, reuseport, uid| PairSocket {
                                addr,
                                v6only,
                                reuseaddr,
                                reuseport,
                                uid,
                            };
                            v.push(PairCase {
                                first: s(a1, v1, ra1, rp1, Uid::Same),
                                state,
                                second: s(a2, v2, ra2, rp2, uid),
                                bindv6only,
                            });
                        }
                    }
                }
            }
        }
    }
    v
}

fn quads(b: [bool; 2]) -> impl Iterator<Item = (bool, bool, bool, bool)> {
    b.into_iter().flat_map(move |w| {
        b.into_iter().flat_map(move |x| {
            b.into_iter()
                .flat_map(move |y| b.into_iter().map(move |z| (w, x, y, z)))
        })
    })
}

/// One cell's result.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PairResult {
    /// The cell.
    pub case: PairCase,
    /// What the real sockets did, or why the cell could not run (in
    /// JSON: `observed` with the calls' outcomes, or `error` with the
    /// reason, never a Rust `Ok`/`Err` tag).
    #[serde(flatten, serialize_with = "observed_or_error")]
    #[schemars(with = "ObservedOrError")]
    pub observed: std::result::Result<Observed, String>,
    /// What the Linux model says.
    pub predicted: PairPrediction,
    /// Windows, documented.
    pub windows: DocumentedPair,
    /// BSD/macOS, documented.
    pub bsd: DocumentedPair,
}

/// What [`observed_or_error`] writes, for the schema.
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Never built: it only describes the JSON.
enum ObservedOrError {
    Observed {
        /// What the real sockets did.
        observed: Box<Observed>,
    },
    Error {
        /// Why the cell could not run.
        error: String,
    },
}

/// `Ok(o)` as `"observed": o`, `Err(e)` as `"error": e`.
fn observed_or_error<S: serde::Serializer>(
    r: &std::result::Result<Observed, String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(1))?;
    match r {
        Ok(o) => m.serialize_entry("observed", o)?,
        Err(e) => m.serialize_entry("error", e)?,
    }
    m.end()
}

impl PairResult {
    /// Does the observation agree with the prediction on all four calls?
    pub fn agrees(&self) -> bool {
        match &self.observed {
            Ok(o) => {
                let p = &self.predicted;
                o.first_bind == p.first_bind
                    && o.second_bind == p.second_bind
                    && o.second_listen == p.second_listen
                    && o.first_listen == p.first_listen
            }
            Err(_) => false,
        }
    }
}

/// Figures of a run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Cells run.
    pub cells: usize,
    /// Cells where observation and prediction differ (errors included).
    pub mismatches: usize,
    /// Cells that could not run.
    pub errors: usize,
    /// Wall time (in JSON `elapsed_s`, seconds).
    #[serde(rename = "elapsed_s", serialize_with = "crate::json::secs")]
    #[schemars(schema_with = "crate::json::schema_of::seconds")]
    pub elapsed: Duration,
}

/// Run one cell in a fresh namespace on the calling thread.
pub fn run_cell(c: &PairCase) -> PairResult {
    let sysctls = [Sysctl::new(
        "net.ipv6.bindv6only",
        if c.bindv6only { "1" } else { "0" },
    )];
    let observed = netns::enter_fresh_private_ehash(&sysctls, 256)
        .and_then(|()| observe::observe(c))
        .map_err(|e| e.to_string());
    PairResult {
        case: *c,
        observed,
        predicted: predict_pair(c),
        windows: predict_pair_windows(c),
        bsd: predict_pair_bsd(c),
    }
}

/// Run `cells` on `threads` workers; results in cell order.
pub fn run(cells: &[PairCase], threads: usize) -> Result<(Vec<PairResult>, Summary)> {
    netns::can_unshare().map_err(crate::error::Error::Netns)?;
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<PairResult>>> = Mutex::new(vec![None; cells.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cells.len() || crate::interrupted() {
                        break;
                    }
                    let r = run_cell(&cells[i]);
                    out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                }
            });
        }
    });
    if crate::interrupted() {
        return Err(crate::error::Error::Interrupted);
    }
    let results: Vec<PairResult> = out
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let summary = Summary {
        cells: results.len(),
        mismatches: results.iter().filter(|r| !r.agrees()).count(),
        errors: results.iter().filter(|r| r.observed.is_err()).count(),
        elapsed: start.elapsed(),
    };
    Ok((results, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pairs_documented::documented_error;

    #[test]
    fn every_documented_error_has_its_systems_number() {
        let sel = Selection {
            other_uid: true,
            bindv6only: &[false, true],
        };
        let mut seen = Vec::new();
        for c in cells(sel) {
            for d in [predict_pair_windows(&c), predict_pair_bsd(&c)] {
                let v = serde_json::to_value(&d).unwrap();
                let r = &v["second_bind"];
                if r["result"] == "ok" {
                    continue;
                }
                assert_eq!(r["result"], "failed", "{v}");
                let (name, code) = (r["error"]["name"].as_str().unwrap(), &r["error"]["code"]);
                // Winsock names carry their own number (WSAE* ≥ 10000),
                // BSD names the BSD errno, below Winsock's range.
                let code = code.as_i64().unwrap();
                if name.starts_with("WSA") {
                    assert!(code > 10000, "{v}");
                } else {
                    assert!(0 < code && code < 10000, "{v}");
                    assert_eq!(r["error"]["wsa"]["code"], code + 10000, "{v}");
                }
                seen.push(name.to_string());
            }
        }
        // Both systems' refusals were among the cells.
        assert!(seen.iter().any(|n| n == "WSAEADDRINUSE"), "{seen:?}");
        assert!(seen.iter().any(|n| n == "EADDRINUSE"), "{seen:?}");
        let bsd = documented_error("EADDRINUSE");
        // sys/errno.h of FreeBSD and of macOS: EADDRINUSE is 48.
        assert_eq!((bsd.code, bsd.wsa.map(|w| w.code)), (48, Some(10048)));
    }
}
