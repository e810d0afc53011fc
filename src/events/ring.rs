//! One page of a per-CPU ring buffer as `per_cpu/cpuN/trace_pipe_raw`
//! hands it out (`tracing_buffers_read()` → `ring_buffer_read_page()`),
//! split into records with their timestamps.
//!
//! The page's layout is the kernel's `struct buffer_data_page`, described
//! by `events/header_page`: a u64 timestamp, a `local_t commit` (bytes of
//! data, with RB_MISSED_EVENTS in bit 31 and RB_MISSED_STORED in bit 30),
//! then the data. Each entry starts with the 32-bit `struct
//! ring_buffer_event` header that `events/header_event` describes:
//! `type_len:5, time_delta:27`, then `array[]`. type_len 1..=28: data of
//! type_len × 4 bytes follows; 0: `array[0]` holds the length; 29 padding
//! (time_delta 0: the rest of the page is empty); 30 a time extend (delta
//! = time_delta + `array[0] << 27`); 31 an absolute time stamp
//! (`rb_event_length()`, `rb_update_event()`, `rb_fix_abs_ts()`).

/// Where the page's fields are, from `events/header_page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLayout {
    /// Size of `commit` (8 on 64-bit kernels).
    pub commit_size: usize,
    /// Offset of the data.
    pub data_offset: usize,
}

impl PageLayout {
    /// From the text of `events/header_page`; the 64-bit defaults where a
    /// line is missing.
    pub fn parse(text: &str) -> PageLayout {
        let mut l = PageLayout {
            commit_size: 8,
            data_offset: 16,
        };
        for line in text.lines() {
            let Some(f) = super::format::Format::parse(&format!("name: h\nID: 0\n{}", line.trim()))
                .and_then(|f| f.fields.into_iter().next())
            else {
                continue;
            };
            match f.name.as_str() {
                "commit" => l.commit_size = f.size,
                "data" => l.data_offset = f.offset,
                _ => {}
            }
        }
        l
    }
}

/// Data lengths in `commit` leave out these flag bits.
const RB_MISSED_EVENTS: u64 = 1 << 31;
const RB_MISSED_STORED: u64 = 1 << 30;
const TYPE_PADDING: u32 = 29;
const TYPE_TIME_EXTEND: u32 = 30;
const TYPE_TIME_STAMP: u32 = 31;
/// Bits of an absolute time stamp; the upper ones come from the page.
const TS_MSB_SHIFT: u32 = 59;

/// One record: its time on the instance's trace clock, and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Nanoseconds on the trace clock.
    pub ts: u64,
    /// The event's bytes, from `common_type` on (may carry padding).
    pub data: &'a [u8],
}

/// What one page held.
#[derive(Debug, Default)]
pub struct Page<'a> {
    /// The records, in order.
    pub records: Vec<RawRecord<'a>>,
    /// Events the kernel lost before this page (overwritten or dropped):
    /// `Some(0)` when it says some were lost without a count.
    pub missed: Option<u64>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn uint_at(b: &[u8], at: usize, size: usize) -> Option<u64> {
    match size {
        4 => u32_at(b, at).map(u64::from),
        8 => Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?)),
        _ => None,
    }
}

/// Split one page into records. A malformed entry ends the page (the
/// records before it are kept).
pub fn parse_page<'a>(page: &'a [u8], layout: PageLayout) -> Page<'a> {
    let mut out = Page::default();
    let (Some(mut ts), Some(commit)) = (uint_at(page, 0, 8), uint_at(page, 8, layout.commit_size))
    else {
        return out;
    };
    let len = (commit & (RB_MISSED_STORED - 1)) as usize;
    let start = layout.data_offset;
    let end = (start + len).min(page.len());
    if commit & RB_MISSED_EVENTS != 0 {
        out.missed = Some(if commit & RB_MISSED_STORED != 0 {
            uint_at(page, end, layout.commit_size).unwrap_or(0)
        } else {
            0
        });
    }
    let mut at = start;
    // Each turn moves `at` forward by at least 4 bytes: bounded by the page.
    while at + 4 <= end {
        let Some(head) = u32_at(page, at) else { break };
        let type_len = head & 0x1f;
        let delta = u64::from(head >> 5);
        let array0 = u32_at(page, at + 4);
        match type_len {
            TYPE_PADDING => {
                let Some(a) = array0.filter(|_| delta != 0) else {
                    break; // The rest of the page is empty.
                };
                at += 4 + a as usize;
            }
            TYPE_TIME_EXTEND => {
                let Some(a) = array0 else { break };
                ts += delta | (u64::from(a) << 27);
                at += 8;
            }
            TYPE_TIME_STAMP => {
                let Some(a) = array0 else { break };
                let abs = delta | (u64::from(a) << 27);
                ts = abs | (ts & !((1u64 << TS_MSB_SHIFT) - 1));
                at += 8;
            }
            0 => {
                let Some(a) = array0 else { break };
                let a = a as usize;
                if a < 4 {
                    break;
                }
                if at + 4 + a > end {
                    break;
                }
                ts += delta;
                out.records.push(RawRecord {
                    ts,
                    data: &page[at + 8..at + 4 + a],
                });
                at += 4 + a;
            }
            n => {
                let n = n as usize * 4;
                if at + 4 + n > end {
                    break;
                }
                ts += delta;
                out.records.push(RawRecord {
                    ts,
                    data: &page[at + 4..at + 4 + n],
                });
                at += 4 + n;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(type_len: u32, delta: u32) -> [u8; 4] {
        (type_len | (delta << 5)).to_ne_bytes()
    }

    #[test]
    fn a_page_splits_into_records_with_times() {
        let layout = PageLayout::parse(
            "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;",
        );
        assert_eq!(
            layout,
            PageLayout {
                commit_size: 8,
                data_offset: 16
            }
        );
        let mut data = Vec::new();
        // A small record: 8 bytes, 100 ns after the page's time.
        data.extend(head(2, 100));
        data.extend([1, 0, 0, 0, 2, 0, 0, 0]);
        // A time extend of 1 << 27 + 5.
        data.extend(head(TYPE_TIME_EXTEND, 5));
        data.extend(1u32.to_ne_bytes());
        // A large record: type_len 0, array[0] = 4 + 8 bytes of data.
        data.extend(head(0, 7));
        data.extend(12u32.to_ne_bytes());
        data.extend([9u8; 8]);
        // Padding to the end.
        data.extend(head(TYPE_PADDING, 0));
        let mut page = Vec::new();
        page.extend(1_000u64.to_ne_bytes());
        page.extend((data.len() as u64 | RB_MISSED_EVENTS).to_ne_bytes());
        page.extend(&data);
        page.resize(4096, 0);
        let p = parse_page(&page, layout);
        assert_eq!(p.missed, Some(0));
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.records[0].ts, 1_100);
        assert_eq!(p.records[0].data, &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(p.records[1].ts, 1_100 + 5 + (1 << 27) + 7);
        assert_eq!(p.records[1].data, &[9u8; 8]);
        // A truncated page yields what it holds, no panic.
        let p = parse_page(&page[..20], layout);
        assert!(p.records.is_empty());
    }
}
