//! Unit tests of `ss --summary`: port use, TIME_WAIT grouping and the
//! warnings, on hand-made socket tables.

use super::*;

#[test]
fn port_use_counts_pairs() {
    let peer: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let other: SocketAddr = "127.0.0.1:81".parse().unwrap();
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let n = |time_wait, reusable, other| PairCount {
        time_wait,
        reusable,
        other,
    };
    let pairs = HashMap::from([
        ((local, peer), n(90, 0, 5)),
        ((local, other), n(10, 0, 0)),
        ((local, "127.0.0.1:82".parse().unwrap()), n(0, 0, 50)),
        // Full, but tcp_tw_reuse frees most: no warning.
        ((local, "127.0.0.1:83".parse().unwrap()), n(100, 80, 0)),
    ]);
    let u = port_use(pairs, 100, 10);
    // The pair with no TIME_WAIT is left out; the fullest comes first.
    assert_eq!(u.len(), 3);
    assert_eq!(u[0].percent_held, 100.0);
    assert_eq!(u[0].percent_blocked, 20.0);
    assert_eq!(
        (u[1].peer, u[1].time_wait, u[1].other_states),
        (peer, 90, 5)
    );
    assert_eq!(u[1].percent_time_wait, 90.0);
    assert_eq!(u[1].percent_held, 95.0);
    assert_eq!(u[2].peer, other);
}

#[test]
fn tw_bucket_headroom() {
    let mut w = Vec::new();
    let b = tw_buckets(Some(1000), 950, &mut w);
    assert_eq!(b.percent, Some(95.0));
    assert_eq!(w.len(), 1);
    let b = tw_buckets(Some(0), 5, &mut w);
    assert_eq!(b.percent, None);
    assert_eq!(w.len(), 1);
}
