//! One pair cell on real sockets, in the calling thread's (fresh) network
//! namespace: bring the first socket to its state, then bind() and
//! listen() the second, then, for a first socket that was only bound, its
//! listen().

use crate::diag::{self, Query, StateSet, TcpState};
use crate::error::{Error, Result};
use crate::model::pairs::{Call, FirstState, PairAddr, PairCase, Uid};
use crate::outcome::SysError;
use crate::socket::{Family, SocketOpts, StepError, TcpSock, V6Only};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The port both sockets bind.
pub const PORT: u16 = 8080;
/// The port of the helper listener a connected first socket talks to.
pub const PEER_PORT: u16 = 9090;
/// The uid of the "other user" (nobody).
pub const OTHER_UID: u32 = 65534;

const TIMEOUT: Duration = Duration::from_secs(2);

/// What the four calls did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Observed {
    /// The first socket's bind().
    pub first_bind: Call,
    /// The second socket's bind().
    pub second_bind: Call,
    /// The second socket's listen().
    pub second_listen: Call,
    /// The first socket's late listen() ([`FirstState::Bound`] only).
    pub first_listen: Call,
}

fn call<T>(r: &std::result::Result<T, StepError>) -> Call {
    match r {
        Ok(_) => Call::Ok,
        Err(e) => Call::Failed {
            error: e.error.clone(),
        },
    }
}

fn setup(what: &str, e: StepError) -> Error {
    Error::Sys {
        what: format!("pair setup: {what}"),
        err: e.error,
    }
}

/// Where a first socket bound at `a` connects to (the helper listener).
fn peer_of(a: PairAddr) -> SocketAddr {
    let ip: IpAddr = match a {
        PairAddr::V4Any | PairAddr::V4Loopback => Ipv4Addr::LOCALHOST.into(),
        PairAddr::V6Any | PairAddr::V6Loopback => Ipv6Addr::LOCALHOST.into(),
        PairAddr::V4Mapped => Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
    };
    SocketAddr::new(ip, PEER_PORT)
}

/// Wait (bounded) until a TIME_WAIT sits on `port`.
fn wait_timewait(port: u16) -> Result<()> {
    let end = Instant::now() + TIMEOUT;
    let q = Query::states(StateSet::of(&[TcpState::TimeWait]));
    loop {
        if diag::dump(&q)?.iter().any(|e| e.local.port() == port) {
            return Ok(());
        }
        if Instant::now() > end {
            return Err(Error::Sys {
                what: format!("pair setup: no TIME_WAIT on port {port}"),
                err: SysError::from_code(libc::ETIMEDOUT),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The sockets a cell keeps open until it is done.
struct Kept {
    first: Option<TcpSock>,
    _others: Vec<TcpSock>,
}

/// Bring the bound first socket to `state`.
fn reach(c: &PairCase, first: TcpSock) -> Result<Kept> {
    let mut others = Vec::new();
    match c.state {
        FirstState::Bound => {}
        FirstState::Listening => first.listen(16).map_err(|e| setup("listen", e))?,
        FirstState::Connected | FirstState::TimeWait => {
            let opts = SocketOpts {
                v6only: V6Only::Off,
                ..Default::default()
            };
            let helper = TcpSock::new(Family::V6, opts).map_err(|e| setup("helper", e))?;
            let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), PEER_PORT);
            helper.bind(any).map_err(|e| setup("helper bind", e))?;
            helper.listen(16).map_err(|e| setup("helper listen", e))?;
            first
                .connect(peer_of(c.first.addr), TIMEOUT)
                .map_err(|e| setup("connect", e))?;
            let (acc, _) = helper.accept(TIMEOUT).map_err(|e| setup("accept", e))?;
            if c.state == FirstState::TimeWait {
                // First FIN from the first socket, then the peer's: the
                // first socket ends in TIME_WAIT (RFC 793 §3.5).
                first.close();
                acc.close();
                wait_timewait(PORT)?;
                return Ok(Kept {
                    first: None,
                    _others: vec![helper],
                });
            }
            others.push(helper);
            others.push(acc);
        }
    }
    Ok(Kept {
        first: Some(first),
        _others: others,
    })
}

/// Run the cell in the calling thread's namespace.
pub fn observe(c: &PairCase) -> Result<Observed> {
    let mut o = Observed {
        first_bind: Call::NotRun,
        second_bind: Call::NotRun,
        second_listen: Call::NotRun,
        first_listen: Call::NotRun,
    };
    let first =
        TcpSock::new(c.first.addr.family(), c.first.opts()).map_err(|e| setup("socket", e))?;
    let r = first.bind(SocketAddr::new(c.first.addr.ip(), PORT));
    o.first_bind = call(&r);
    if r.is_err() {
        return Ok(o);
    }
    let kept = reach(c, first)?;
    let uid = match c.second.uid {
        Uid::Same => 0,
        Uid::Other => OTHER_UID,
    };
    let second = crate::sys::fsuid::with_fsuid(uid, || {
        TcpSock::new(c.second.addr.family(), c.second.opts())
    })
    .map_err(|e| setup("second socket", e))?;
    let r = second.bind(SocketAddr::new(c.second.addr.ip(), PORT));
    o.second_bind = call(&r);
    if r.is_ok() {
        o.second_listen = call(&second.listen(16));
    }
    if let (FirstState::Bound, Some(first)) = (c.state, kept.first.as_ref()) {
        o.first_listen = call(&first.listen(16));
    }
    Ok(o)
}
