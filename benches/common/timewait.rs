//! Tables of TIME_WAIT sockets for the benches that read them (`ss`,
//! `diag`), and a child process timed on its own.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use twlab::diag::{self, Query, StateSet, TcpState};

/// Listener ports on 127.0.0.1; clients spread over them.
pub const PORTS: [u16; 8] = [5001, 5002, 5003, 5004, 5005, 5006, 5007, 5008];
/// At most this many (8 listener ports × 64,512 ephemeral ports, kept
/// under two thirds full so connect() finds free ports fast).
pub const MAX_WANT: usize = 400_000;
const BATCH: usize = 500;

/// TIME_WAIT sockets in the calling thread's namespace.
pub fn count_time_wait() -> Result<usize, String> {
    let mut n = 0;
    diag::dump_each(&Query::states(StateSet::of(&[TcpState::TimeWait])), |_| {
        n += 1;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(n)
}

/// Make `want` connections to the [`PORTS`] listeners and close each
/// client first, then its server end, so each client end goes
/// FIN_WAIT2 → TIME_WAIT. Batches keep the number of open fds bounded.
/// Returns the listeners (kept open: the table then has them too, as a
/// real server's would) and the count made.
pub fn make_time_wait(want: usize) -> Result<(Vec<TcpListener>, usize), String> {
    let listeners: Vec<TcpListener> = PORTS
        .iter()
        .map(|p| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, *p))))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("listen: {e}"))?;
    let mut made = 0;
    // The first TIME_WAITs expire after 60 s.
    let deadline = Instant::now() + Duration::from_secs(50);
    while made < want {
        if Instant::now() > deadline {
            return Err(format!("setup took over 50 s ({made} made)"));
        }
        let n = BATCH.min(want - made);
        let mut clients = Vec::with_capacity(n);
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let l = &listeners[(made + i) % listeners.len()];
            let c = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
                .map_err(|e| format!("connect #{}: {e}", made + i))?;
            let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
            clients.push(c);
            servers.push(s);
        }
        // Client first (FIN_WAIT2), then the server once it has read the
        // client's FIN (its own FIN moves the client's mini socket to
        // TIME_WAIT). Waiting for EOF avoids a simultaneous close, which
        // would leave TIME_WAIT on the server end too.
        drop(clients);
        for s in servers {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            match (&s).read(&mut [0u8; 16]) {
                Ok(0) => {}
                other => return Err(format!("expected EOF from the client, got {other:?}")),
            }
        }
        made += n;
    }
    // The last FINs are processed synchronously on loopback, but wait on
    // the kernel's state rather than assume it (bounded, 5 s).
    let end = Instant::now() + Duration::from_secs(5);
    while count_time_wait()? < want && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((listeners, made))
}

/// Run `cmd` with stdout to /dev/null under /usr/bin/time; return its
/// wall time and peak RSS (KiB).
///
/// Not wait4() on a child of this process: a child's ru_maxrss starts from
/// the high-water mark of the memory it was forked from (exec keeps the
/// old mm's hiwater_rss in signal->maxrss), i.e. this bench's own, which
/// after making the sockets is as large as what is measured. /usr/bin/time
/// is small, so its child's ru_maxrss is the child's alone.
pub fn time_child(cmd: &Command) -> Result<(Duration, i64), String> {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "TWLAB-MAXRSS-KIB=%M"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let start = Instant::now();
    let out = timed
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("spawn /usr/bin/time: {e}"))?;
    let wall = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("TWLAB-MAXRSS-KIB="))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(format!("no peak RSS from /usr/bin/time: {err}"))?;
    Ok((wall, rss))
}
