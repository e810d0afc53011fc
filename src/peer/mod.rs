//! The two programs of the story: a server that accepts and closes, and a
//! client with a fixed local port that connects and closes in a loop.

pub mod client;
pub mod server;

use crate::diag::{self, TcpState, TupleView};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Who closes a connection first, as the two programs see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseMode {
    /// Close as soon as the connection is up: this end sends the first FIN
    /// and will hold TIME_WAIT (RFC 793 §3.5).
    First,
    /// Wait for the peer's FIN (recv returns 0), then close: the peer holds
    /// TIME_WAIT.
    #[default]
    AfterPeer,
}

/// One line describing an end of a connection for a failure report, e.g.
/// "127.0.0.1:23456 → 127.0.0.1:12345 is TIME_WAIT, 58.9 s left".
pub fn describe_end(local: SocketAddr, peer: SocketAddr, e: &Option<diag::SockEntry>) -> String {
    match e {
        None => format!("{local} → {peer}: no socket (gone)"),
        Some(e) => {
            let why = match e.state {
                TcpState::FinWait2
                    if e.timer.is_some_and(|t| t.kind == diag::TimerKind::Timewait) =>
                {
                    " (orphaned: closed here, the peer has not closed yet; kept as a timewait mini-socket)"
                }
                TcpState::FinWait2 | TcpState::FinWait1 => {
                    ": still closing, the peer has not closed yet"
                }
                TcpState::CloseWait => ": the peer closed, this end has not",
                TcpState::LastAck => ": closed after the peer, waiting for the last ACK",
                TcpState::TimeWait => " (this end closed first)",
                _ => "",
            };
            format!("{local} → {peer} is {}{why}", e.describe())
        }
    }
}

/// Both ends of a 4-tuple as lines, client end first.
pub fn describe_view(client: SocketAddr, server: SocketAddr, v: &TupleView) -> Vec<String> {
    vec![
        format!("client end: {}", describe_end(client, server, &v.client)),
        format!("server end: {}", describe_end(server, client, &v.server)),
    ]
}
