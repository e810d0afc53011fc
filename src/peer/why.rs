//! What `server` and `client` print beside a failed bind() or connect():
//! the `twlab why` diagnosis of the live namespace (its short form), checked
//! against the errno the call just got. It runs only on a failure that is
//! about ports (EADDRINUSE, EADDRNOTAVAIL): the success path never reads
//! the socket table.

use crate::outcome::SysError;
use crate::socket::SocketOpts;
use crate::why::{self, Agreement, BindQuestion, ConnectQuestion, Diagnosis, Expect};
use serde::Serialize;
use std::net::SocketAddr;

/// The diagnosis of a failed call, and whether it explains the errno.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FailureWhy {
    /// The errno the call got, as every errno is in JSON (docs/json.md):
    /// `{"name": "EADDRINUSE", "code": 98, "wsa": {…}}`.
    pub errno: SysError,
    /// Whether the diagnosis predicts that errno. A [`Agreement::Mismatch`]
    /// means the table read after the failure does not explain it (the
    /// holder may have gone in between): the text then says so instead of
    /// printing an explanation that contradicts the kernel.
    pub agreement: Agreement,
    /// The diagnosis, as `twlab why --json` gives it.
    pub diagnosis: Diagnosis,
}

/// Is this an error the port rules explain?
fn about_ports(err: &SysError) -> bool {
    err.is("EADDRINUSE") || err.is("EADDRNOTAVAIL")
}

/// The errno's name as the rules spell it (POSIX, without "WSA").
fn posix_name(err: &SysError) -> &str {
    err.name.strip_prefix("WSA").unwrap_or(&err.name)
}

fn judge(d: Diagnosis, err: &SysError) -> FailureWhy {
    let name = posix_name(err);
    FailureWhy {
        errno: err.clone(),
        agreement: why::live::agreement(&d.expect, Some(name)),
        diagnosis: d,
    }
}

/// The diagnosis of a bind() of `addr` with `opts` that failed with `err`;
/// `None` for other errors or when the table cannot be read.
pub(crate) fn after_bind(
    addr: SocketAddr,
    opts: SocketOpts,
    asker: why::Asker,
    err: &SysError,
) -> Option<FailureWhy> {
    if !about_ports(err) {
        return None;
    }
    let q = BindQuestion {
        addr,
        opts,
        v6only: opts.v6only.resolve(
            crate::sysctl::read(crate::sysctl::BINDV6ONLY).is_some_and(|v| v.trim() != "0"),
        ),
        uid: why::live::euid(),
        cap_net_bind_service: crate::sys::fsuid::has_cap_net_bind_service(),
        asker,
    };
    let sys = crate::sysctl::NetSysctls::read().ok()?;
    let scope = why::live::Scope::of_bind(&q);
    let d = why::live::answer(scope, |t| why::diagnose_bind(&q, t, &sys)).ok()?;
    Some(judge(d, err))
}

/// The diagnosis of a connect() to `dst` (after bind(`from`), if any) that
/// failed with `err`.
pub(crate) fn after_connect(
    dst: SocketAddr,
    from: Option<SocketAddr>,
    opts: SocketOpts,
    err: &SysError,
) -> Option<FailureWhy> {
    if !about_ports(err) {
        return None;
    }
    let q = ConnectQuestion {
        dst,
        from,
        bind_no_port: false,
        opts,
        uid: why::live::euid(),
        cap_net_bind_service: crate::sys::fsuid::has_cap_net_bind_service(),
    };
    let sys = crate::sysctl::NetSysctls::read().ok()?;
    let scope = why::live::Scope::of_connect(&q);
    let d = why::live::answer(scope, |t| why::diagnose_connect(&q, t, &sys)).ok()?;
    Some(judge(d, err))
}

impl FailureWhy {
    /// The short form, or, when the diagnosis does not predict the errno,
    /// a line that says so.
    pub fn text(&self) -> String {
        match self.agreement {
            Agreement::Agrees | Agreement::Resolves => why::render::short(&self.diagnosis),
            Agreement::Mismatch => {
                let predicted = match &self.diagnosis.expect {
                    Expect::Ok => "succeeds".to_string(),
                    e => e.describe(),
                };
                format!(
                    "why: not explained: the socket table read right after the failure predicts that the call {predicted}, not {}; the sockets that caused it may have gone in between (`twlab why {}` reads the table again)\n",
                    posix_name(&self.errno),
                    why::render::why_args(&self.diagnosis)
                )
            }
        }
    }

    /// The address of the listener the diagnosis found in the way, if any.
    pub(crate) fn blocking_listener(&self) -> Option<SocketAddr> {
        self.diagnosis
            .holders
            .iter()
            .find(|h| {
                h.role == why::Role::Listener
                    && matches!(
                        h.blocking,
                        why::Blocking::Always | why::Blocking::Unless { .. }
                    )
            })
            .map(|h| h.local)
    }

    /// Does the diagnosis blame a listener (the one case where "another
    /// program listens there" is true)?
    pub(crate) fn blames_listener(&self) -> bool {
        self.agreement != Agreement::Mismatch
            && self.diagnosis.holders.iter().any(|h| {
                h.role == why::Role::Listener
                    && matches!(
                        h.blocking,
                        why::Blocking::Always | why::Blocking::Unless { .. }
                    )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::SockEntry;
    use crate::sysctl::NetSysctls;

    fn time_wait(local: &str, peer: &str) -> SockEntry {
        SockEntry::time_wait(
            local.parse().unwrap(),
            peer.parse().unwrap(),
            std::time::Duration::from_millis(50_000),
        )
    }

    fn sys() -> NetSysctls {
        NetSysctls::from_lookup(|n| {
            Some(
                match n {
                    "net.ipv4.tcp_timestamps" => "1",
                    "net.ipv4.tcp_tw_reuse" => "2",
                    "net.ipv4.ip_local_port_range" => "32768 60999",
                    "net.ipv4.ip_local_reserved_ports" => "",
                    "net.ipv4.tcp_max_tw_buckets" => "262144",
                    "net.ipv6.bindv6only" => "0",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .unwrap()
    }

    #[test]
    fn a_contradicting_diagnosis_is_not_printed_as_an_explanation() {
        let sys = sys();
        let q = BindQuestion {
            addr: "127.0.0.1:12345".parse().unwrap(),
            opts: SocketOpts::default(),
            v6only: false,
            uid: 0,
            cap_net_bind_service: true,
            asker: why::Asker::Unknown,
        };
        let err = SysError::from_code(libc::EADDRINUSE);
        // Nothing on the port: the table does not explain EADDRINUSE.
        let empty = judge(why::diagnose_bind(&q, &why::Table::default(), &sys), &err);
        assert_eq!(empty.agreement, Agreement::Mismatch);
        let t = empty.text();
        assert!(t.starts_with("why: not explained"), "{t}");
        assert!(
            t.contains("predicts that the call succeeds, not EADDRINUSE"),
            "{t}"
        );
        // A server-side TIME_WAIT on the port explains it.
        let table = why::Table::from_entries(vec![time_wait("127.0.0.1:12345", "127.0.0.1:40000")]);
        let held = judge(why::diagnose_bind(&q, &table, &sys), &err);
        assert_eq!(held.agreement, Agreement::Agrees);
        assert!(!held.blames_listener());
        let t = held.text();
        assert!(t.contains("holder: TIME_WAIT"), "{t}");
        assert!(t.contains("SO_REUSEADDR on both sockets"), "{t}");
    }
}
