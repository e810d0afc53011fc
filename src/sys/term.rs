//! The terminal, for live views (`twlab ss --watch`): its height, stdin in
//! raw mode, and waiting for a key with a timeout. Unix only (termios,
//! poll(2), TIOCGWINSZ); whether stdin or stdout is a terminal at all is
//! std's [`std::io::IsTerminal`].

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

nix::ioctl_read_bad!(
    /// TIOCGWINSZ: the terminal's window size (tty_ioctl(4)).
    tiocgwinsz,
    nix::libc::TIOCGWINSZ,
    nix::libc::winsize
);

/// Rows of the terminal on stdout, `None` if it is not a terminal or does
/// not say.
pub(crate) fn rows() -> Option<usize> {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass and nothing else.
    let r = unsafe { tiocgwinsz(1, &mut ws) };
    (r.is_ok() && ws.ws_row > 0).then_some(usize::from(ws.ws_row))
}

/// Stdin in raw mode: no line buffering, no echo, and Ctrl-C as a byte
/// (ISIG off) so the caller can restore the screen itself. The saved
/// settings come back on drop, also when unwinding.
pub(crate) struct RawStdin {
    saved: Termios,
}

impl RawStdin {
    /// Switch stdin (a terminal) to raw mode; `None` if it cannot be.
    pub(crate) fn enter() -> Option<RawStdin> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawStdin { saved })
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// What waiting on stdin gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StdinRead {
    /// Nothing arrived within the timeout.
    Nothing,
    /// This many bytes were read into the buffer.
    Bytes(usize),
    /// The terminal is at end of file: nothing more will come.
    Eof,
}

/// Wait up to `timeout` (capped at i32::MAX ms) for stdin to become
/// readable, then read what is there into `buf` with one read(2), so bytes
/// never sit in a userspace buffer that poll(2) cannot see.
pub(crate) fn read_stdin_within(timeout: Duration, buf: &mut [u8]) -> StdinRead {
    let stdin = io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, t) {
        Ok(n) if n > 0 => {}
        _ => return StdinRead::Nothing,
    }
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    if !revents.contains(PollFlags::POLLIN) {
        // POLLHUP alone: the terminal went away; say so rather than have
        // the caller poll again at once.
        return if revents.contains(PollFlags::POLLHUP) {
            StdinRead::Eof
        } else {
            StdinRead::Nothing
        };
    }
    match nix::unistd::read(stdin.as_fd(), buf) {
        Ok(0) => StdinRead::Eof,
        Ok(k) => StdinRead::Bytes(k),
        Err(_) => StdinRead::Nothing,
    }
}
