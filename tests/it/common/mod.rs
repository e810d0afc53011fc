//! Shared helpers for the integration tests: run the `twlab` binary inside a
//! fresh network namespace of the test's own, and wait on kernel state.
//!
//! The harness in three pieces: [`netns_test!`] defines a test that runs in
//! a fresh namespace (or says it was skipped, under its own name), [`skip`]
//! is the one way to say a test did not run, and [`wait_until`] is the one
//! bounded wait on kernel state.
#![allow(dead_code)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use twlab::diag::{self, Query, StateSet, TcpState};
use twlab::netns::{self, Sysctl};

/// The `twlab` binary Cargo built for these tests.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin!("twlab").to_path_buf()
}

/// Say that a test was skipped and why: `what` is "<test>: <why>", printed
/// as "skipped <test>: <why>". Written to the process's stderr directly,
/// not through `eprintln!`, which the test harness captures and hides for
/// passing tests: a skip must be visible in every run. ([`netns_test!`]
/// supplies the test's name itself.)
pub fn skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped {what}");
}

/// Define a `#[test]` whose body runs on a thread in a fresh network
/// namespace (see [`in_netns`]), with the namespace's sysctls set first and
/// the tools it needs checked. Without namespaces (not root) or a tool, it
/// calls [`skip`] with the test's own name and passes.
///
/// ```ignore
/// netns_test! {
///     /// What it shows.
///     fn name(sysctls = [("net.ipv4.tcp_tw_reuse", "0")], tools = ["ss"]) {
///         ...
///     }
/// }
/// ```
/// `sysctls = [...]` and `tools = [...]` are optional, in that order.
#[macro_export]
macro_rules! netns_test {
    (@test $(#[$m:meta])* $name:ident, [$($s:expr),*], [$($t:expr),*], $body:block) => {
        $(#[$m])*
        #[test]
        fn $name() {
            let test = stringify!($name);
            if !$crate::common::netns_or_skip(test) {
                return;
            }
            let tools: &[&str] = &[$($t),*];
            if !tools.iter().all(|t| $crate::common::tool_or_skip(test, t)) {
                return;
            }
            $crate::common::in_netns(&[$($s),*], move || $body);
        }
    };
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        $crate::netns_test!(@test $(#[$m])* $name, [], [], $body);
    };
    ($(#[$m:meta])* fn $name:ident(sysctls = [$($s:expr),* $(,)?]) $body:block) => {
        $crate::netns_test!(@test $(#[$m])* $name, [$($s),*], [], $body);
    };
    ($(#[$m:meta])* fn $name:ident(tools = [$($t:expr),* $(,)?]) $body:block) => {
        $crate::netns_test!(@test $(#[$m])* $name, [], [$($t),*], $body);
    };
    (
        $(#[$m:meta])*
        fn $name:ident(sysctls = [$($s:expr),* $(,)?], tools = [$($t:expr),* $(,)?])
        $body:block
    ) => {
        $crate::netns_test!(@test $(#[$m])* $name, [$($s),*], [$($t),*], $body);
    };
}

/// Wait (bounded by `timeout`, polling every 2 ms) until `ready` returns
/// `Some`, and return that; panics naming `what` on timeout.
pub fn wait_until<T>(timeout: Duration, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// True if `tool` runs (`tool -V`); otherwise skips `test` and says why.
pub fn tool_or_skip(test: &str, tool: &str) -> bool {
    if Command::new(tool).arg("-V").output().is_ok() {
        return true;
    }
    skip(&format!("{test}: {tool} is not installed"));
    false
}

/// True if this test can make network namespaces; prints why not otherwise.
/// When true, the calling test shares the machine with the others from now
/// until its thread ends (see [`alone_on_the_machine`]): call it at the
/// start of a test, on the test's own thread.
pub fn netns_or_skip(test: &str) -> bool {
    match netns::can_unshare() {
        Ok(()) => {
            share_the_machine();
            true
        }
        Err(why) => {
            skip(&format!(
                "{test}: cannot create network namespaces ({why}); run as root"
            ));
            false
        }
    }
}

/// What every namespace sees: the kernel's tracepoints report the sockets
/// of every network namespace of the machine, and the story's ports (12345,
/// 23456) are in use in many namespaces at once, by the tests of every
/// module of this one binary (and by the `twlab` commands they run). A test
/// that counts the kernel's events on those ports takes this lock alone
/// ([`alone_on_the_machine`]); every test that may make namespaces shares it
/// ([`netns_or_skip`]). Held by the test's thread until it ends (libtest
/// runs each test on a thread of its own).
static MACHINE: RwLock<()> = RwLock::new(());

/// This thread's hold on [`MACHINE`] (guards held, never read).
#[allow(dead_code)]
enum Hold {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

thread_local! {
    static HELD: RefCell<Option<Hold>> = const { RefCell::new(None) };
}

/// Share the machine with the other tests until this thread ends (once per
/// thread; nothing more if it holds the machine already).
fn share_the_machine() {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        if h.is_none() {
            let g = MACHINE.read().unwrap_or_else(PoisonError::into_inner);
            *h = Some(Hold::Shared(g));
        }
    });
}

/// Have the machine to this test alone until its thread ends: waits for the
/// tests that share it to finish, and no test that may make namespaces
/// starts meanwhile. For a test that counts the kernel's events on the
/// story's ports, which would see every other test's sockets on them. Call
/// it first, before [`netns_or_skip`].
pub fn alone_on_the_machine() {
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        assert!(
            h.is_none(),
            "alone_on_the_machine() after netns_or_skip() on the same thread would wait for itself"
        );
        let g = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
        *h = Some(Hold::Alone(g));
    });
}

/// Run `f` on a thread inside a fresh namespace with `sysctls`; child
/// processes spawned by `f` inherit the namespace.
///
/// Every test namespace turns on RFC 1337 protection first: by default
/// (`tcp_rfc1337 = 0`) an RST that reaches a TIME_WAIT kills it ("TIME-WAIT
/// assassination", tcp_timewait_state_process()). Seen here: in 3 runs in 60
/// of the peer tests under CPU load the TIME_WAIT vanished early and the
/// namespace had sent one RST (netstat: TW=1, OutRsts=1); with protection,
/// 0 in 80.
pub fn in_netns<T: Send + 'static>(
    sysctls: &[(&str, &str)],
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let s = std::iter::once(Sysctl::new("net.ipv4.tcp_rfc1337", "1"))
        .chain(sysctls.iter().map(|(n, v)| Sysctl::new(*n, *v)))
        .collect();
    netns::run_in_fresh(s, f).expect("fresh network namespace")
}

/// Wait (bounded, 5 s) until something listens on `addr`.
pub fn wait_listening(addr: SocketAddr) {
    let listening = StateSet::of(&[TcpState::Listen]);
    wait_until(
        Duration::from_secs(5),
        &format!("a listener on {addr}"),
        || {
            let l = diag::dump(&Query::states(listening)).unwrap();
            l.iter().any(|e| e.local == addr).then_some(())
        },
    );
}

/// How many sockets of the calling thread's namespace are in `states`.
pub fn count(states: &[TcpState]) -> usize {
    diag::dump(&Query::states(StateSet::of(states)))
        .unwrap()
        .len()
}

/// Start `twlab server` with `args` and wait until it listens on `addr`.
pub fn start_server(addr: SocketAddr, args: &[&str]) -> Child {
    let child = Command::new(bin())
        .arg("server")
        .arg("--listen")
        .arg(addr.to_string())
        .args(["--idle-timeout", "30"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twlab server");
    wait_listening(addr);
    child
}

/// Stop a server started by [`start_server`] and return what it printed
/// (its event lines help explain a failed test).
pub fn stop_server(mut child: Child) -> String {
    let _ = child.kill();
    match child.wait_with_output() {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(server output lost: {e})"),
    }
}

/// The namespace's non-zero TCP counters (/proc/thread-self/net/netstat
/// and snmp), to explain a socket that vanished.
pub fn tcp_counters() -> String {
    twlab::netstat::counters()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What iproute2's `ss -tanoe` says about the calling thread's namespace.
pub fn iproute2_ss() -> String {
    match std::process::Command::new("ss").arg("-tanoe").output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).to_string(),
        Err(e) => format!("(ss: {e})"),
    }
}

/// Every TCP socket of the calling thread's namespace, one per line.
pub fn socket_table() -> String {
    match diag::dump(&Query::default()) {
        Ok(v) => v
            .iter()
            .map(|e| format!("  {} {} → {} {:?}", e.state, e.local, e.peer, e.timer))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(no socket table: {e})"),
    }
}

/// A fresh, empty directory of `name`'s own under the system's temporary
/// directory (`twlab-NAME-PID`, emptied first). `name` is the test's, or
/// the file's it holds: two tests that run at once never share one.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twlab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Start the `twlab` binary with `args`, its stdout to /dev/null and its
/// stderr piped (for [`stop_with`]).
pub fn start(args: &[&str]) -> Child {
    Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twlab")
}

/// How a command stopped by [`stop_with`] ended.
#[cfg(unix)]
#[derive(Debug)]
pub struct Stopped {
    pub status: std::process::ExitStatus,
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// All it wrote to stderr (empty if stderr was not piped).
    pub stderr: String,
    /// From just before the signal was sent to the exit.
    pub elapsed: Duration,
}

#[cfg(unix)]
impl Stopped {
    /// Assert it stopped cleanly, as [`one_line_failure`] does: non-zero
    /// exit, exactly one line on stderr, no panic; return that line.
    pub fn one_line(&self) -> String {
        one_line_of(self.status, &self.stderr)
    }
}

/// Send `signal` to `child` (already started and, where the test needs it,
/// waited on until it is in the state to stop from) and wait for its exit,
/// reading its stderr meanwhile. Bounded: a child still running `within`
/// after the signal is killed and the test fails here; the test asserts
/// its own, tighter bound on [`Stopped::elapsed`].
#[cfg(unix)]
pub fn stop_with(child: Child, signal: nix::sys::signal::Signal, within: Duration) -> Stopped {
    let pid = child.id() as i32;
    try_stop(child, pid, signal, within).unwrap_or_else(|e| panic!("{e}"))
}

/// [`stop_with`], the signal sent to the child's process group (a child
/// started with `process_group(0)`), as Ctrl-C at a terminal sends it.
#[cfg(unix)]
pub fn stop_group_with(
    child: Child,
    signal: nix::sys::signal::Signal,
    within: Duration,
) -> Stopped {
    let group = -(child.id() as i32);
    try_stop(child, group, signal, within).unwrap_or_else(|e| panic!("{e}"))
}

/// [`stop_with`], a child still running `within` after the signal an
/// error (it is killed) rather than a failed test.
#[cfg(unix)]
pub fn try_stop_with(
    child: Child,
    signal: nix::sys::signal::Signal,
    within: Duration,
) -> Result<Stopped, String> {
    let pid = child.id() as i32;
    try_stop(child, pid, signal, within)
}

/// Send `signal` to `target` (the child, or its group) and wait at most
/// `within` for the child to exit (polling every 2 ms, as [`wait_until`]).
#[cfg(unix)]
fn try_stop(
    mut child: Child,
    target: i32,
    signal: nix::sys::signal::Signal,
    within: Duration,
) -> Result<Stopped, String> {
    use std::io::Read;
    // Read on a thread of its own, so a chatty child never blocks on a
    // full pipe; the read ends at the child's exit (or kill).
    let reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let start = Instant::now();
    let sent = nix::sys::signal::kill(nix::unistd::Pid::from_raw(target), signal);
    let mut status = None;
    if sent.is_ok() {
        while start.elapsed() < within {
            status = child.try_wait().expect("try_wait");
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let elapsed = start.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = reader
        .map(|r| r.join().unwrap_or_default())
        .unwrap_or_default();
    if let Err(e) = sent {
        return Err(format!("kill({target}, {signal}): {e}; stderr: {stderr}"));
    }
    let Some(status) = status else {
        return Err(format!(
            "still running {within:?} after {signal} (killed); stderr: {stderr}"
        ));
    };
    Ok(Stopped {
        status,
        code: status.code(),
        stderr,
        elapsed,
    })
}

/// Run the `twlab` binary with `args` and wait for it.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run twlab")
}

/// The JSON lines a command printed.
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// Assert a command failed cleanly: non-zero exit, exactly one line on
/// stderr, no panic; return that line.
pub fn one_line_failure(o: &Output) -> String {
    one_line_of(o.status, &String::from_utf8_lossy(&o.stderr))
}

/// [`one_line_failure`] of an exit `status` and what was written to stderr.
fn one_line_of(status: std::process::ExitStatus, err: &str) -> String {
    assert!(
        !status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "backtrace hint: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {err}");
    lines[0].to_string()
}

#[cfg(target_os = "linux")]
/// On this thread only: a private mount namespace (unshare(CLONE_NEWNS),
/// mounts made private so nothing propagates to the host) with a tmpfs of
/// `size` at `dir`; children spawned from this thread see it, nothing else
/// does, and it goes when the thread and they end. False (with a printed
/// note) where the kernel refuses.
pub fn private_tmpfs(test: &str, dir: &std::path::Path, options: &str) -> bool {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    let r = unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))
        .and_then(|_| {
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| format!("making / private: {e}"))
        })
        .and_then(|_| {
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(options),
            )
            .map_err(|e| format!("mounting a tmpfs: {e}"))
        });
    match r {
        Ok(()) => true,
        Err(why) => {
            skip(&format!("{test}: no private mount namespace here ({why})"));
            false
        }
    }
}

#[cfg(target_os = "linux")]
/// A [`fresh_dir`] named after `test` with a [`private_tmpfs`] of
/// `options` on it; `None` (the test skipped, and said so) where the
/// kernel refuses. Remove it with [`unmount_and_remove`].
pub fn tmpfs_dir(test: &str, options: &str) -> Option<PathBuf> {
    let d = fresh_dir(test);
    if private_tmpfs(test, &d, options) {
        Some(d)
    } else {
        let _ = std::fs::remove_dir(&d);
        None
    }
}

#[cfg(target_os = "linux")]
/// Remount the [`private_tmpfs`] at `dir` read-only (this thread's mount
/// namespace only).
pub fn remount_read_only(dir: &std::path::Path) {
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .expect("remount read-only");
}

#[cfg(target_os = "linux")]
/// Detach the test's tmpfs (and what is mounted inside it) and remove
/// the empty directory it sat on.
pub fn unmount_and_remove(dir: &std::path::Path) {
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(dir);
}

/// Where `v` breaks the JSON Schema of twlab's output `name` (one of
/// `twlab::schema::schemas()`, the schemas in docs/json/): one line per
/// error, with its place in `v`. Empty when it conforms.
///
/// A line of a stream is held to its own type's schema (the `oneOf` branch
/// whose `type` is the line's), so the errors are that schema's, not
/// "not valid under any of the schemas listed in the 'oneOf'".
pub fn schema_errors(name: &str, v: &serde_json::Value) -> Vec<String> {
    let (_, schema) = twlab::schema::schemas()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no schema named {name}"));
    let schema = match line_schema(schema.as_value(), v) {
        Ok(Some(s)) => s,
        Ok(None) => schema.as_value().clone(),
        Err(e) => return vec![e],
    };
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("docs/json/{name}.schema.json does not compile: {e}"));
    validator
        .iter_errors(v)
        .map(|e| format!("at {:?}: {e}", e.instance_path().as_str()))
        .collect()
}

/// For a stream's schema (a `oneOf` of line types) and a line naming its
/// `type`: that type's branch, with the schema's `$defs` beside it so its
/// references resolve. `None` for a document's schema or a line without a
/// string `type` (the whole schema then judges); an error for a type the
/// stream does not have.
fn line_schema(
    schema: &serde_json::Value,
    v: &serde_json::Value,
) -> Result<Option<serde_json::Value>, String> {
    let (Some(lines), Some(kind)) = (
        schema.get("oneOf").and_then(|o| o.as_array()),
        v.get("type").and_then(|t| t.as_str()),
    ) else {
        return Ok(None);
    };
    let kind_of = |l: &serde_json::Value| l.pointer("/properties/type/const").cloned();
    let Some(line) = lines
        .iter()
        .find(|l| kind_of(l).as_ref().and_then(|k| k.as_str()) == Some(kind))
    else {
        let known: Vec<_> = lines.iter().filter_map(kind_of).collect();
        return Err(format!(
            "at \"/type\": {kind:?} is no line type of this stream (one of {known:?})"
        ));
    };
    let mut one = line.clone();
    if let (Some(o), Some(defs)) = (one.as_object_mut(), schema.get("$defs")) {
        o.insert("$defs".into(), defs.clone());
        if let Some(s) = schema.get("$schema") {
            o.insert("$schema".into(), s.clone());
        }
    }
    Ok(Some(one))
}

/// `v` conforms to the schema of output `name` ([`schema_errors`]).
pub fn assert_conforms(name: &str, v: &serde_json::Value) {
    let errors = schema_errors(name, v);
    assert!(
        errors.is_empty(),
        "twlab's {name} output breaks docs/json/{name}.schema.json: {errors:#?}\n{v}"
    );
}
