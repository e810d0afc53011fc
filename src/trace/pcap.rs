//! `--pcap FILE`: the captured frames as a classic pcap (LINKTYPE_ETHERNET:
//! `lo` and veth frames carry Ethernet headers), readable by Wireshark and
//! tshark.

use super::capture::RawFrame;
use crate::error::{Error, Result};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Write `frames` to `path`.
pub(crate) fn write(path: &Path, frames: &[RawFrame]) -> Result<()> {
    let what = format!("writing the pcap {}", path.display());
    let f = std::fs::File::create(path).map_err(|e| Error::sys(what.clone(), &e))?;
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(f), PcapHeader::default())
        .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    for fr in frames {
        let ts = fr.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let len = fr.data.len() as u32;
        w.write_packet(&PcapPacket::new(ts, len, &fr.data))
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    }
    Ok(())
}
