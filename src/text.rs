//! Text from outside (arguments echoed in errors, process names from
//! /proc/PID/comm) made safe to print on a terminal: control characters
//! escaped the way JSON (and iproute2's JSON output) writes them, so an
//! argument like `$'\e[2J'` or a process named `\e]0;x\a` cannot clear the
//! screen or retitle the window; and long echoes cut short. Also numbers with
//! thousands separators (`group`).

use std::borrow::Cow;
use std::fmt::Write;
use std::io;
use std::net::SocketAddr;

/// The decimal digits of `n`, as `{n}` prints them, written into the tail
/// of `buf` without `core::fmt` (the tight loops that print a line per
/// connection or per socket: `peer::line`, `ss::list`).
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// `a` as `{a}`: IPv4 without the formatter, IPv6 with it (`peer::line`
/// and the kernel's events print one or two per connection).
pub(crate) fn put_addr(out: &mut impl io::Write, a: &SocketAddr) -> io::Result<()> {
    match a {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            for (k, o) in [a, b, c, d].into_iter().enumerate() {
                if k > 0 {
                    out.write_all(b".")?;
                }
                out.write_all(decimal(o.into(), &mut [0u8; 20]))?;
            }
            out.write_all(b":")?;
            out.write_all(decimal(v4.port().into(), &mut [0u8; 20]))
        }
        SocketAddr::V6(_) => write!(out, "{a}"),
    }
}

/// How many characters of one piece of user input an error echoes.
pub(crate) const ECHO_MAX_CHARS: usize = 200;

/// Is `c` a control character a terminal may act on: C0 (U+0000..U+001F),
/// DEL, or C1 (U+0080..U+009F, which some terminals take as CSI, OSC ...)?
fn is_control(c: char) -> bool {
    c.is_control()
}

/// `s` with every control character escaped as JSON writes it: `\n`,
/// `\t`, `\r`, `\b`, `\f`, and `\u001b` style for the rest (ESC, BEL,
/// DEL, C1). Backslashes are left as they are, so escaping twice changes
/// nothing (errors are escaped once more as a whole line by the CLI).
pub fn escape_for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if is_control(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The first `max` characters of `s`, then `… (N more characters)` if
/// there were more.
pub(crate) fn shorten(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => {
            let more = s[cut..].chars().count();
            let unit = if more == 1 { "character" } else { "characters" };
            Cow::Owned(format!("{}… ({more} more {unit})", &s[..cut]))
        }
    }
}

/// User input as an error message quotes it: at most
/// [`ECHO_MAX_CHARS`] characters, control characters escaped.
pub(crate) fn echo(s: &str) -> String {
    let short = shorten(s, ECHO_MAX_CHARS);
    escape_for_terminal(&short).into_owned()
}

/// An error line with every long piece of user input in it cut to
/// [`ECHO_MAX_CHARS`] characters, as [`echo`] cuts it, and control
/// characters escaped: the last guard of the CLI's error path, for
/// messages that quote an argument whole (clap's "invalid value '…'", a
/// path in an I/O error) instead of through [`echo`].
///
/// First every argument in `args` (and the value after `=` of a
/// `--flag=value`) longer than the limit is cut wherever it appears; then
/// any other run of non-blank characters longer than the limit (a piece
/// of an argument a parser quoted) is cut, keeping the quotes and
/// punctuation around it. Pieces already cut (ending in `…`) are left as
/// they are.
pub(crate) fn cut_echoes(line: &str, args: &[String]) -> String {
    let long = |p: &&str| p.chars().count() > ECHO_MAX_CHARS;
    let mut pieces: Vec<&str> = args
        .iter()
        .flat_map(|a| [Some(a.as_str()), a.split_once('=').map(|(_, v)| v)])
        .flatten()
        .filter(long)
        .collect();
    // Longest first: `--x=VALUE` before VALUE inside it.
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    pieces.dedup();
    let mut out = line.to_string();
    for p in pieces {
        if out.contains(p) {
            out = out.replace(p, &echo(p));
        }
    }
    let out = escape_for_terminal(&out);
    let mut cut = String::with_capacity(out.len().min(4 * ECHO_MAX_CHARS));
    let mut rest: &str = &out;
    while !rest.is_empty() {
        let blank = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        cut.push_str(&rest[..blank]);
        rest = &rest[blank..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        cut.push_str(&cut_run(&rest[..end]));
        rest = &rest[end..];
    }
    cut
}

/// One run of non-blank characters, its core cut to [`ECHO_MAX_CHARS`]
/// between the quotes and punctuation around it (`'xxx…':` keeps `'` and
/// `':`).
fn cut_run(run: &str) -> Cow<'_, str> {
    const AROUND: &[char] = &['\'', '"', '(', ')', '[', ']', ',', ':', ';', '.'];
    if run.chars().count() <= ECHO_MAX_CHARS {
        return Cow::Borrowed(run);
    }
    let core = run.trim_start_matches(AROUND);
    let head = &run[..run.len() - core.len()];
    let core = core.trim_end_matches(AROUND);
    let tail = &run[head.len() + core.len()..];
    if core.ends_with('…') {
        return Cow::Borrowed(run);
    }
    Cow::Owned(format!("{head}{}{tail}", shorten(core, ECHO_MAX_CHARS)))
}

/// 28001 → "28,001".
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(28001), "28,001");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
    }

    #[test]
    fn escapes_like_json() {
        assert_eq!(escape_for_terminal("time-wait"), "time-wait");
        assert_eq!(
            escape_for_terminal("\x1b[2Jtime-wait"),
            "\\u001b[2Jtime-wait"
        );
        assert_eq!(escape_for_terminal("\x1b]0;x\x07"), "\\u001b]0;x\\u0007");
        assert_eq!(
            escape_for_terminal("a\nb\tc\u{7f}\u{9b}"),
            "a\\nb\\tc\\u007f\\u009b"
        );
        // Idempotent: a second pass changes nothing.
        let once = escape_for_terminal("\x1b\\x").into_owned();
        assert_eq!(escape_for_terminal(&once), once);
        // Matches serde_json for the C0 range.
        for b in 0u8..0x20 {
            let c = char::from(b).to_string();
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(escape_for_terminal(&c), j.trim_matches('"'), "{b}");
        }
    }

    #[test]
    fn cuts_long_input() {
        let long = "é".repeat(100_000);
        let e = echo(&long);
        assert!(e.starts_with(&"é".repeat(ECHO_MAX_CHARS)));
        assert!(e.ends_with("… (99800 more characters)"), "{e}");
        assert_eq!(echo("short"), "short");
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc… (1 more character)");
    }

    /// The longest run of `c` in `s`.
    fn longest_run(s: &str, c: char) -> usize {
        s.split(|x| x != c)
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn cuts_every_long_echo_in_a_line() {
        let a = "a".repeat(1000);
        let b = "b".repeat(300);
        let args = vec![
            "twlab".to_string(),
            format!("--connect={a}"),
            format!("x y {b}"),
        ];
        // Quoted whole by clap, then a piece of it by a parser, then an
        // argument with blanks in it.
        let line = format!(
            "invalid value '{a}' for '--connect': host '{}': no; also 'x y {b}' and {}",
            &a[..600],
            "c".repeat(250)
        );
        let cut = cut_echoes(&line, &args);
        for c in ['a', 'c'] {
            assert_eq!(longest_run(&cut, c), ECHO_MAX_CHARS, "{c}: {cut}");
        }
        // The argument with blanks is cut whole: "x y " and 196 b.
        assert_eq!(longest_run(&cut, 'b'), ECHO_MAX_CHARS - 4, "{cut}");
        assert!(cut.contains("… (800 more characters)' for '--connect': host '"));
        assert!(
            cut.contains("… (400 more characters)': no; also 'x y "),
            "{cut}"
        );
        assert!(cut.contains("… (104 more characters)' and "), "{cut}");
        assert!(cut.ends_with("… (50 more characters)"), "{cut}");
        // Control characters escaped; what is short or already cut stays.
        assert_eq!(cut_echoes("'\x1b' ok", &[]), "'\\u001b' ok");
        let once = cut_echoes(&line, &args);
        assert_eq!(cut_echoes(&once, &args), once);
        assert_eq!(cut_echoes("short line", &args), "short line");
    }

    #[test]
    fn addresses_as_the_formatter_prints_them() {
        for a in [
            "127.0.0.1:1",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.40:8080",
            "[::1]:443",
            "[fe80::1%2]:22",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut v = Vec::new();
            put_addr(&mut v, &a).unwrap();
            assert_eq!(String::from_utf8(v).unwrap(), a.to_string());
        }
    }
}
