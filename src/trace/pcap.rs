//! `--pcap FILE`: the captured frames for Wireshark and tshark
//! (LINKTYPE_ETHERNET: `lo` and veth frames carry Ethernet headers). A
//! name ending in `.pcapng` gets pcapng, whose Enhanced Packet Blocks carry
//! comments (opt_comment): each annotated moment's explanation and the
//! kernel's events since the frame before ride on their frame, and
//! nanosecond times (if_tsresol 9). Any other name gets a classic pcap
//! (microseconds, no comments), as before.

use super::Trace;
use super::annotate::describe;
use super::capture::RawFrame;
use crate::error::Result;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use std::borrow::Cow;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Write the trace's frames to `path`.
/// Through a temporary file renamed into place ([`crate::outfile`]): a
/// link at `path` is refused, a failed write leaves no file.
pub(crate) fn write(path: &Path, t: &Trace) -> Result<crate::outfile::Written> {
    let ng = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pcapng"));
    crate::outfile::write_with(path, |w| {
        if ng {
            write_ng(w, t)
        } else {
            write_classic(w, &t.raw)
        }
    })
}

fn write_classic(w: impl std::io::Write, frames: &[RawFrame]) -> Result<(), String> {
    let mut w = PcapWriter::with_header(w, PcapHeader::default()).map_err(|e| e.to_string())?;
    for fr in frames {
        let ts = fr.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let len = fr.data.len() as u32;
        w.write_packet(&PcapPacket::new(ts, len, &fr.data))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The comment of each raw frame: the moments of its segment and the
/// kernel's events between the frame before and it.
fn comments(t: &Trace) -> Vec<String> {
    // Raw frames and numbered segments are in the same order; a frame that
    // is no segment of the trace (another 4-tuple) has none.
    let mut out = vec![String::new(); t.raw.len()];
    let mut j = 0;
    let mut seg_of = vec![None; t.raw.len()];
    for (i, fr) in t.raw.iter().enumerate() {
        let Some(w) = super::decode::decode_frame(&fr.data) else {
            continue;
        };
        if let Some(k) = t.segments[j..].iter().position(|s| s.wire == w) {
            j += k;
            seg_of[i] = Some(j);
            j += 1;
        }
    }
    let mut kernel = t.kernel_events.iter().peekable();
    for (i, s) in seg_of.iter().enumerate() {
        let Some(s) = s.map(|j| &t.segments[j]) else {
            continue;
        };
        let mut lines = Vec::new();
        while let Some(k) = kernel.next_if(|k| k.at_us < s.at_us) {
            lines.push(format!(
                "kernel +{:.3} ms: {}",
                k.at_us as f64 / 1000.0,
                k.text()
            ));
        }
        for m in t
            .moments
            .iter()
            .filter(|m| super::render::moment_row(m) == s.n)
        {
            lines.extend(describe(m));
        }
        for c in t.cites.iter().filter(|c| c.segment == s.n) {
            lines.extend(c.lines.iter().cloned());
        }
        out[i] = lines.join("\n");
    }
    if let Some(last) = out.last_mut() {
        let rest: Vec<String> = kernel
            .map(|k| format!("kernel +{:.3} ms: {}", k.at_us as f64 / 1000.0, k.text()))
            .collect();
        if !rest.is_empty() {
            if !last.is_empty() {
                last.push('\n');
            }
            last.push_str(&rest.join("\n"));
        }
    }
    out
}

fn write_ng(w: impl std::io::Write, t: &Trace) -> Result<(), String> {
    let mut w = PcapNgWriter::new(w).map_err(|e| e.to_string())?;
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(t.capture_on.clone())),
            // Times in nanoseconds (10^-9).
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    };
    w.write_pcapng_block(idb).map_err(|e| e.to_string())?;
    for (fr, comment) in t.raw.iter().zip(comments(t)) {
        let mut options = Vec::new();
        if !comment.is_empty() {
            options.push(EnhancedPacketOption::Comment(Cow::Owned(comment)));
        }
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: fr.wall.duration_since(UNIX_EPOCH).unwrap_or_default(),
            original_len: fr.data.len() as u32,
            data: Cow::Borrowed(&fr.data),
            options,
        };
        w.write_pcapng_block(epb).map_err(|e| e.to_string())?;
    }
    Ok(())
}
