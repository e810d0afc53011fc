//! The events of all CPUs in one time order, across reads.
//!
//! Each CPU's buffer hands over its events in the order it took them, but
//! a read takes the buffers one after another: an event of one CPU read
//! now may be younger than an event of another CPU still being written,
//! which only the next read gets. A reader that handed everything over at
//! once misordered the events of a socket whose memory moved between
//! CPUs (a client socket freed, its address reused by the server's next
//! socket: one life of the states of both). So a read hands over only
//! the events up to a time before which every buffer is known to be
//! complete, and holds the rest for the next.
//!
//! Each event moves once into the output (twice if held): the merge of the
//! per-CPU runs replaced a sort of the whole batch, whose moves of
//! 160-byte events were a sixth of the reader's time.

use super::Event;

/// Move the events of `runs` (each in time order, or sorted here if not)
/// into `out` in time order, each run emptied; those later than `until`
/// go to `held` instead, also in order. Equal times keep the runs' order.
pub(crate) fn merge(
    runs: &mut [Vec<Event>],
    until: Option<u64>,
    out: &mut Vec<Event>,
    held: &mut Vec<Event>,
) {
    let mut heads: Vec<std::vec::Drain<'_, Event>> = runs
        .iter_mut()
        .filter(|r| !r.is_empty())
        .map(|r| {
            // A buffer's events are in time order (tracefs stamps them as
            // it reserves their room, the BPF programs right after); a
            // clock that stepped back is sorted here rather than trusted.
            if !r.is_sorted_by_key(|e| e.at_ns) {
                r.sort_by_key(|e| e.at_ns);
            }
            r.drain(..)
        })
        .collect();
    // Bounded: every pass moves one event out of a run. The heads are
    // looked at in place (`as_slice`): an event moves only to its place.
    loop {
        let mut first: Option<(usize, u64)> = None;
        for (i, h) in heads.iter().enumerate() {
            if let Some(e) = h.as_slice().first()
                && first.is_none_or(|(_, t)| e.at_ns < t)
            {
                first = Some((i, e.at_ns));
            }
        }
        let Some((i, t)) = first else {
            break;
        };
        let Some(e) = heads[i].next() else {
            break;
        };
        if until.is_some_and(|u| t > u) {
            held.push(e);
        } else {
            out.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::TcpState;
    use crate::events::{Context, What};

    fn ev(at_ns: u64, cpu: u32) -> Event {
        Event {
            at_ns,
            cpu,
            pid: 0,
            comm: None,
            context: Context::Softirq,
            sock: 0,
            local: None,
            peer: None,
            what: What::State {
                old: TcpState::FinWait2,
                new: TcpState::Closed,
            },
        }
    }

    fn times(v: &[Event]) -> Vec<(u64, u32)> {
        v.iter().map(|e| (e.at_ns, e.cpu)).collect()
    }

    #[test]
    fn runs_merge_into_one_order_and_the_late_are_held() {
        // Held from the last read (CPU 1), then CPU 0 and CPU 1 now: CPU
        // 0's 5 was still being written at the last read.
        let mut runs = vec![
            vec![ev(6, 1), ev(9, 1)],
            vec![ev(5, 0), ev(7, 0), ev(20, 0)],
            vec![ev(10, 1), ev(30, 1)],
        ];
        let (mut out, mut held) = (Vec::new(), Vec::new());
        merge(&mut runs, Some(20), &mut out, &mut held);
        assert_eq!(
            times(&out),
            [(5, 0), (6, 1), (7, 0), (9, 1), (10, 1), (20, 0)]
        );
        assert_eq!(times(&held), [(30, 1)]);
        assert!(runs.iter().all(Vec::is_empty));
        // Without a bound everything goes out, in order.
        let mut runs = vec![vec![ev(3, 1), ev(1, 1)], vec![ev(2, 0)], vec![]];
        let (mut out, mut held) = (Vec::new(), Vec::new());
        merge(&mut runs, None, &mut out, &mut held);
        assert_eq!(times(&out), [(1, 1), (2, 0), (3, 1)]);
        assert!(held.is_empty());
    }

    #[test]
    fn equal_times_keep_the_order_of_the_runs() {
        let mut runs = vec![vec![ev(4, 1)], vec![ev(4, 0)], vec![ev(4, 2)]];
        let (mut out, mut held) = (Vec::new(), Vec::new());
        merge(&mut runs, Some(4), &mut out, &mut held);
        assert_eq!(times(&out), [(4, 1), (4, 0), (4, 2)]);
    }
}
