//! `twlab why`: arguments (clap) → a [`BindQuestion`] / [`ConnectQuestion`]
//! / port, answered on the live namespace by [`crate::why::live`].

use super::socket_flags::{SocketFlags, V6OnlyArg};
use crate::outcome::Exit;
use crate::socket::{SocketOpts, V6Only, parse_endpoint};
use crate::why::{self, BindQuestion, ConnectQuestion, Diagnosis, live};
use clap::{Args, Subcommand};
use std::net::{IpAddr, SocketAddr};

const AFTER_HELP: &str = "\
The holders of a port are its whole bind bucket: every socket with that
local port, in every state (listeners, bound-only sockets, connections,
TIME_WAIT), not just one 4-tuple. The SO_REUSEADDR/SO_REUSEPORT of other
sockets cannot be read from sock_diag (a TIME_WAIT keeps the flags of the
socket it came from): the answer says what each value would mean, and
--try asks the kernel by binding for real in this namespace (never
listen(); connect() only to loopback, aborted with SO_LINGER 0 once the
handshake has a result, at most 500 ms). As root, `why connect --try`
also records the kernel's own events for the attempt (its tracepoints):
the states, and why it failed in the kernel's words (the RST's reason,
a dropped segment's reason).

Windows and BSD/macOS outcomes are documented, not run.
Exit status: 0 if the call is predicted to succeed, 4 if it is predicted to
fail (or may fail), 3 if --try contradicted the prediction.";

/// Why does a bind() or connect() fail, and what will help.
#[derive(Args)]
#[command(after_help = AFTER_HELP)]
pub struct WhyArgs {
    #[command(subcommand)]
    what: WhyCmd,
    /// Also perform the call(s) in this namespace and compare.
    #[arg(long = "try", global = true)]
    try_it: bool,
    /// Print the diagnosis as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Print the short form (what server and client print on a failure).
    #[arg(long, global = true)]
    short: bool,
}

#[derive(Subcommand)]
enum WhyCmd {
    /// bind(ADDR:PORT) with the given options (port 0: the kernel picks).
    Bind {
        /// ADDR:PORT, [IPv6]:PORT or localhost:PORT.
        addr: String,
        #[command(flatten)]
        socket: SocketFlags,
    },
    /// connect(DST:PORT), optionally after bind(--from).
    Connect {
        /// DST:PORT.
        dst: String,
        /// bind() this ADDR or ADDR:PORT first.
        #[arg(long)]
        from: Option<String>,
        /// IP_BIND_ADDRESS_NO_PORT before bind(ADDR, 0).
        #[arg(long)]
        bind_no_port: bool,
        /// SO_REUSEADDR on the connecting socket.
        #[arg(long)]
        reuseaddr: bool,
    },
    /// Everything about one port: its bind bucket and flags.
    Port {
        /// The port.
        port: u16,
    },
}

fn parse_from(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 0));
    }
    Ok(parse_endpoint(s)?)
}

/// Run `twlab why`.
pub fn run(a: WhyArgs) -> anyhow::Result<Exit> {
    let d: Diagnosis = match a.what {
        WhyCmd::Bind { addr, socket } => {
            let addr = parse_endpoint(&addr)?;
            let v6only = match socket.v6only {
                V6OnlyArg::On => true,
                V6OnlyArg::Off => false,
                V6OnlyArg::System => crate::sysctl::NetSysctls::read()?
                    .bindv6only
                    .unwrap_or(false),
            };
            let q = BindQuestion {
                addr,
                // The question carries IPV6_V6ONLY resolved (`v6only`).
                opts: SocketOpts {
                    v6only: V6Only::System,
                    ..socket.opts(None)
                },
                v6only,
                uid: live::euid(),
                cap_net_bind_service: crate::sys::fsuid::has_cap_net_bind_service(),
                asker: why::Asker::Unknown,
            };
            live::bind(&q, a.try_it)?
        }
        WhyCmd::Connect {
            dst,
            from,
            bind_no_port,
            reuseaddr,
        } => {
            let q = ConnectQuestion {
                dst: parse_endpoint(&dst)?,
                from: from.as_deref().map(parse_from).transpose()?,
                bind_no_port,
                opts: SocketOpts {
                    reuseaddr,
                    ..Default::default()
                },
                uid: live::euid(),
                cap_net_bind_service: crate::sys::fsuid::has_cap_net_bind_service(),
            };
            live::connect(&q, a.try_it)?
        }
        WhyCmd::Port { port } => live::port(port, a.try_it)?,
    };
    if a.json {
        super::out(format!("{}\n", crate::json::pretty(&d)?))?;
    } else if a.short {
        super::out(why::render::short(&d))?;
    } else {
        super::out(why::render::long(&d))?;
    }
    let mismatch = d.tried.iter().any(|t| t.agrees == why::Agreement::Mismatch);
    Ok(if mismatch {
        Exit::Disagreed
    } else if d.expect == why::Expect::Ok {
        Exit::Done
    } else {
        Exit::Failed
    })
}
