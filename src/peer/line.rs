//! The tight loop's lines written without `core::fmt`: integers, seconds
//! and addresses ([`crate::text::put_addr`], shared with the kernel's
//! events) straight into the output buffer. `twlab client` and
//! `twlab server` print one line per connection; with `write!` the
//! formatting machinery was a third of their own (user-space) time per
//! connection. Each function prints exactly what the `format!` named in
//! its comment prints; the tests hold them to it.

use std::io::{self, Write};

const SPACES: &[u8; 16] = b"                ";

/// `n` as `{n:<width}` (width at most 16).
pub(crate) fn put_u64_left(out: &mut impl Write, n: u64, width: usize) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let d = crate::text::decimal(n, &mut buf);
    let pad = width.min(SPACES.len()).saturating_sub(d.len());
    out.write_all(d)?;
    out.write_all(&SPACES[..pad])
}

/// `n` as `{n:>width}` (width at most 16).
fn put_u64_right(out: &mut impl Write, n: u64, width: usize) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let d = crate::text::decimal(n, &mut buf);
    let pad = width.min(SPACES.len()).saturating_sub(d.len());
    out.write_all(&SPACES[..pad])?;
    out.write_all(d)
}

/// Seconds as [`super::Secs3`] prints them (`{t:>8.3}`).
pub(crate) fn put_secs3(out: &mut impl Write, t: f64) -> io::Result<()> {
    if !(t.is_finite() && (0.0..1e9).contains(&t)) {
        return write!(out, "{}", super::Secs3(t));
    }
    let ms = (t * 1000.0).round() as u64;
    put_u64_right(out, ms / 1000, 4)?;
    let frac = ms % 1000;
    out.write_all(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ])
}

pub(crate) use crate::text::put_addr;

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut v = Vec::new();
        f(&mut v).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn integers_as_the_formatter_prints_them() {
        for n in [0, 1, 9, 10, 99, 100, 1234, 12345, 65535, u64::MAX] {
            let d = crate::text::decimal(n, &mut [0u8; 20]).to_vec();
            assert_eq!(String::from_utf8(d).unwrap(), format!("{n}"));
            assert_eq!(text(|o| put_u64_left(o, n, 4)), format!("{n:<4}"));
            assert_eq!(text(|o| put_u64_right(o, n, 4)), format!("{n:>4}"));
        }
    }

    #[test]
    fn seconds_as_secs3_prints_them() {
        for t in [
            0.0,
            0.0004,
            0.0005,
            0.0006,
            0.999,
            0.9996,
            1.5,
            12.3456,
            9999.9994,
            123_456.789,
            -1.0,
            f64::NAN,
            2e9,
        ] {
            assert_eq!(
                text(|o| put_secs3(o, t)),
                super::super::Secs3(t).to_string(),
                "{t}"
            );
        }
    }
}
