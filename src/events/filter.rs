//! Which sockets a session keeps, and the filters that say it to the
//! kernel (the events' filter language, kernel/trace/trace_events_filter.c)
//! so that it records no more than user space keeps.

use super::format::Format;
use std::net::{IpAddr, SocketAddr};

/// Which sockets a session keeps: a port of either end, an address of
/// either end; empty lists keep everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Ports (either end).
    pub ports: Vec<u16>,
    /// Addresses (either end).
    pub addrs: Vec<IpAddr>,
}

impl Filter {
    /// Everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Sockets with `port` at either end.
    pub fn ports(ports: &[u16]) -> Filter {
        Filter {
            ports: ports.to_vec(),
            addrs: Vec::new(),
        }
    }

    /// Does a socket with these ends pass?
    pub fn matches(&self, local: Option<SocketAddr>, peer: Option<SocketAddr>) -> bool {
        let ends = [local, peer];
        let port_ok = self.ports.is_empty()
            || ends
                .iter()
                .flatten()
                .any(|a| self.ports.contains(&a.port()));
        let addr_ok = self.addrs.is_empty()
            || ends
                .iter()
                .flatten()
                .any(|a| self.addrs.contains(&a.ip()) || self.addrs.contains(&canon(a.ip())));
        port_ok && addr_ok
    }

    /// True when it keeps everything.
    pub fn is_all(&self) -> bool {
        self.ports.is_empty() && self.addrs.is_empty()
    }

    /// The kernel-side filter for an event with these fields: its port
    /// fields compared with the ports; `None` when nothing can be said in
    /// the kernel and user space decides alone. One expression for both
    /// transports: tracefs takes its text (the events' filter language,
    /// kernel/trace/trace_events_filter.c), the BPF transport compiles it
    /// into its programs (`events::bpf`).
    pub(super) fn kernel_filter(&self, f: &Format) -> Option<KernelFilter> {
        let mut all = Vec::new();
        if f.name == "inet_sock_set_state" && f.field("protocol").is_some() {
            all.push(vec![Test::eq("protocol", libc::IPPROTO_TCP as u64)]);
        }
        if f.name == "kfree_skb" && f.field("protocol").is_some() {
            // skb->protocol stored in host order (ntohs() in the
            // TP_fast_assign of include/trace/events/skb.h).
            all.push(vec![
                Test::eq("protocol", 0x0800),
                Test::eq("protocol", 0x86dd),
            ]);
        }
        if let Some(purge) = self.purge_filter(f) {
            all.push(purge);
        }
        if !self.ports.is_empty() && f.field("sport").is_some() && f.field("dport").is_some() {
            let any = self
                .ports
                .iter()
                .flat_map(|&p| [Test::eq("sport", p.into()), Test::eq("dport", p.into())])
                .collect();
            all.push(any);
        }
        (!all.is_empty()).then_some(KernelFilter { all })
    }

    /// For `skb:kfree_skb` under a port or address filter: leave out, in
    /// the kernel, the frees of a closing socket's queues that name no
    /// socket. Every connection's end ends in one: `sk_stream_kill_queues()`
    /// purges its queues with SKB_DROP_REASON_QUEUE_PURGE and `rx_sk` NULL.
    /// Such a record could only be shown by `Session::keep` if its packet
    /// had been answered with an RST, and a packet on a socket's queue was
    /// accepted, not answered; so user space would discard every one of
    /// them, after the kernel had written it to the ring buffer (the
    /// story's loop: 1 of its 11 events per connection). Under tracefs the
    /// probe still runs: the kernel builds the record before the filter
    /// drops it. The value comes from this kernel's own
    /// `__print_symbolic()` list; without it, no filter.
    fn purge_filter(&self, f: &Format) -> Option<Vec<Test>> {
        if self.is_all() || f.name != "kfree_skb" || f.field("rx_sk").is_none() {
            return None;
        }
        let n = f
            .symbols
            .get("reason")?
            .iter()
            .find_map(|(n, s)| (s == "QUEUE_PURGE").then_some(*n))?;
        Some(vec![Test::ne("rx_sk", 0), Test::ne("reason", n)])
    }
}

/// A filter the kernel applies before it hands an event over: every group
/// must hold, and a group holds when any of its tests does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelFilter {
    /// The groups (and), each a list of tests (or).
    pub all: Vec<Vec<Test>>,
}

/// One comparison of a record's field with a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Test {
    /// The field, by its name in the `format` file.
    pub field: &'static str,
    /// `!=` rather than `==`.
    pub not: bool,
    /// The number, as the field holds it (zero-extended).
    pub value: u64,
}

impl Test {
    fn eq(field: &'static str, value: u64) -> Test {
        Test {
            field,
            not: false,
            value,
        }
    }

    fn ne(field: &'static str, value: u64) -> Test {
        Test {
            field,
            not: true,
            value,
        }
    }
}

/// In the events' filter language, as tracefs takes it.
impl std::fmt::Display for KernelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, any) in self.all.iter().enumerate() {
            if i > 0 {
                f.write_str(" && ")?;
            }
            let paren = any.len() > 1;
            if paren {
                f.write_str("(")?;
            }
            for (j, t) in any.iter().enumerate() {
                let op = if t.not { "!=" } else { "==" };
                let sep = if j > 0 { " || " } else { "" };
                write!(f, "{sep}{} {op} {}", t.field, t.value)?;
            }
            if paren {
                f.write_str(")")?;
            }
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address as IPv4.
fn canon(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kernel (6.18): `events/skb/kfree_skb/format`, its
    /// symbol list cut to three entries.
    const KFREE_SKB: &str = "name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s\", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" }, { 3, \"NO_SOCKET\" }, { 105, \"QUEUE_PURGE\" })
";

    /// Under a port filter the kernel leaves out the queue purges of
    /// closing sockets (no socket named: user space would drop them all),
    /// by this kernel's own number for QUEUE_PURGE; watching everything,
    /// it records them (they are shown then).
    #[test]
    fn queue_purges_are_left_out_in_the_kernel_only_under_a_filter() {
        let f = Format::parse(KFREE_SKB).expect("the format parses");
        let port = Filter::ports(&[12345])
            .kernel_filter(&f)
            .unwrap()
            .to_string();
        assert_eq!(
            port,
            "(protocol == 2048 || protocol == 34525) && (rx_sk != 0 || reason != 105)"
        );
        let all = Filter::all().kernel_filter(&f).unwrap().to_string();
        assert_eq!(all, "(protocol == 2048 || protocol == 34525)");
        // A kernel without rx_sk (before 6.12) or without the name: no clause.
        let old = Format::parse(&KFREE_SKB.replace("rx_sk", "rx_xx")).unwrap();
        assert!(
            !Filter::ports(&[1])
                .kernel_filter(&old)
                .unwrap()
                .to_string()
                .contains("reason")
        );
    }
}
