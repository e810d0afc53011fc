//! The namespace's SNMP/MIB counters (`/proc/net/netstat`, `/proc/net/snmp`)
//! and its TIME_WAIT count (`/proc/net/sockstat`): the one reader.
//!
//! `/proc/net` is `/proc/self/net`, the *main thread's* namespace; a
//! thread that entered a namespace of its own (every twlab experiment
//! does, see `crate::netns`) finds its own under `/proc/thread-self/net`.
//! The files pair a header line of names with a line of values, each line
//! prefixed by its group (`TcpExt:`, `Tcp:`, …).

use std::collections::BTreeMap;

/// Every counter of the calling thread's namespace, keyed `Group:Name`
/// (`TcpExt:PAWSEstab`, `Tcp:ActiveOpens`); empty where /proc cannot be read.
pub fn counters() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for f in [
        "/proc/thread-self/net/netstat",
        "/proc/thread-self/net/snmp",
    ] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        parse_into(&text, &mut out);
    }
    out
}

/// One counter (`"TcpExt:PAWSEstab"`), `None` if this kernel has no such.
pub fn counter(key: &str) -> Option<u64> {
    counters().get(key).copied()
}

/// `after - before` for every counter that grew.
pub fn deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let d = a.saturating_sub(*before.get(k).unwrap_or(&0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// TIME_WAIT sockets of the calling thread's namespace, from the "tw"
/// field of sockstat (`tcp_death_row.tw_refcount` - 1): one small read,
/// where a sock_diag dump would walk the whole hash.
pub fn time_wait_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == "tw" {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// Parse name/value line pairs into `out`.
fn parse_into(text: &str, out: &mut BTreeMap<String, u64>) {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let mut n = names.split_whitespace();
        let Some(prefix) = n.next() else { continue };
        for (name, v) in n.zip(values.split_whitespace().skip(1)) {
            if let Ok(v) = v.parse() {
                out.insert(format!("{prefix}{name}"), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_of_lines_become_keyed_counters() {
        let mut m = BTreeMap::new();
        parse_into(
            "TcpExt: SyncookiesSent PAWSEstab\nTcpExt: 0 7\nIpExt: InOctets\nIpExt: 99\n",
            &mut m,
        );
        assert_eq!(m.get("TcpExt:PAWSEstab"), Some(&7));
        assert_eq!(m.get("IpExt:InOctets"), Some(&99));
        let mut later = m.clone();
        later.insert("TcpExt:PAWSEstab".into(), 9);
        assert_eq!(
            deltas(&m, &later).into_iter().collect::<Vec<_>>(),
            vec![("TcpExt:PAWSEstab".to_string(), 2)]
        );
    }
}
