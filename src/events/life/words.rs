//! The lives, takeovers and readings in words, each written in place:
//! `twlab events --lives` writes a line per connection end, and a
//! `format!` per piece was a fifth of the reader's time.

use super::{Ending, Life, Reading, Role, Takeover};
use crate::events::render::Addr;

/// " (pid 4711, comm)" after "closed first", or nothing.
struct Who<'a>(Option<i32>, Option<&'a str>);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0, self.1) {
            (Some(p), Some(c)) => write!(f, " (pid {p}, {c})"),
            (Some(p), None) => write!(f, " (pid {p})"),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Life {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        // The duration to the microsecond in integers: `{:.3}` of a float
        // takes the slow exact path of float formatting, once per end.
        let us = self
            .end_ns
            .saturating_sub(self.start_ns)
            .saturating_add(500)
            / 1_000;
        write!(
            f,
            "life  {role} {} ⇄ {}  {}.{:03} ms  ",
            Addr(self.local),
            Addr(self.peer),
            us / 1_000,
            us % 1_000
        )?;
        let who = Who(self.closer_pid, self.closer_comm.as_deref());
        match &self.ending {
            Ending::TimeWait => write!(f, "closed first{who}: TIME_WAIT here, 60 s"),
            Ending::FinWait2Timewait => write!(
                f,
                "closed first{who}: a FIN_WAIT2 timewait socket here, the peer's FIN not seen"
            ),
            Ending::LastAck => write!(f, "closed second{who}: no TIME_WAIT here"),
            Ending::ResetSent { reason } => write!(
                f,
                "reset by this end{who}: RST sent, reason {}, no TIME_WAIT",
                reason.as_deref().unwrap_or("?")
            ),
            Ending::ResetReceived => f.write_str("reset by the peer: RST received, no TIME_WAIT"),
            Ending::Refused => f.write_str("refused: the SYN was answered with an RST"),
            Ending::NeverEstablished => f.write_str("never established"),
            Ending::Other { from } => write!(f, "ended from {}", from.kernel_name()),
        }?;
        f.write_str("  [")?;
        for (i, s) in self.states.iter().enumerate() {
            if i > 0 {
                f.write_str(" → ")?;
            }
            f.write_str(s.kernel_name())?;
        }
        f.write_str("]")?;
        if self.retransmits > 0 {
            write!(f, ", {} retransmits", self.retransmits)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tw    TIME_WAIT {} ⇄ {} → gone after {:.3} ms: {}",
            self.local, self.peer, self.after_ms, self.by
        )
    }
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reading::TimeWait => f.write_str(
                "= TIME_WAIT: both FINs are through; tcp_time_wait() hands the 4-tuple to a timewait socket for 60 s and closes the full socket",
            ),
            Reading::FinWait2Timewait => f.write_str(
                "= a timewait socket in FIN_WAIT2: closed and orphaned, the peer's FIN not in yet (tcp_time_wait(sk, TCP_FIN_WAIT2, …)); TIME_WAIT when it comes",
            ),
            Reading::PeerTimeWait { peer } => write!(
                f,
                "this FIN turns {peer}'s FIN_WAIT2 timewait socket into TIME_WAIT"
            ),
        }
    }
}
