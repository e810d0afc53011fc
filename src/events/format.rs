//! An event's `format` file: where each field sits in the binary record
//! (written by the kernel's `print_event_fields()` from the
//! TRACE_EVENT's `TP_STRUCT__entry`), and the names the print format gives
//! to numbers (`__print_symbolic(REC->reason, { 3, "TCP_RFC7323_PAWS" }, …)`).
//! Nothing here assumes an offset: a field another kernel moved or dropped
//! is found where its format says, or reported missing.

use std::collections::HashMap;

/// One field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its name, without an array suffix ("saddr" for `__u8 saddr[4]`).
    pub name: String,
    /// Its C type as written ("__u16", "const void *", "enum sk_rst_reason").
    pub ctype: String,
    /// Byte offset in the record (common fields included).
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Signed integer.
    pub signed: bool,
}

/// A parsed `format` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Format {
    /// "inet_sock_set_state".
    pub name: String,
    /// The number in each record's `common_type`.
    pub id: u16,
    /// Every field, common ones first.
    pub fields: Vec<Field>,
    /// Field name → (number → symbol), from `__print_symbolic()` in the
    /// print format, where the numbers are written as numbers.
    pub symbols: HashMap<String, HashMap<u64, String>>,
    /// Field name → index in `fields`.
    index: rustc_hash::FxHashMap<String, usize>,
    /// The fields twlab decodes, found once here: every record reads a
    /// dozen of them, hundreds of thousands of times a second in the
    /// story's loop.
    slots: [Option<(usize, usize)>; Key::COUNT],
}

/// The fields twlab's decoder reads, by their names in the `format` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `common_pid`.
    CommonPid,
    /// `common_flags`.
    CommonFlags,
    /// `skaddr`.
    Skaddr,
    /// `protocol`.
    Protocol,
    /// `family`.
    Family,
    /// `saddr`.
    Saddr,
    /// `daddr`.
    Daddr,
    /// `saddr_v6`.
    SaddrV6,
    /// `daddr_v6`.
    DaddrV6,
    /// `sport`.
    Sport,
    /// `dport`.
    Dport,
    /// `oldstate`.
    Oldstate,
    /// `newstate`.
    Newstate,
    /// `state`.
    State,
    /// `reason`.
    Reason,
    /// `skbaddr`.
    Skbaddr,
    /// `rx_sk`.
    RxSk,
}

impl Key {
    const COUNT: usize = 17;
    const ALL: [Key; Key::COUNT] = [
        Key::CommonPid,
        Key::CommonFlags,
        Key::Skaddr,
        Key::Protocol,
        Key::Family,
        Key::Saddr,
        Key::Daddr,
        Key::SaddrV6,
        Key::DaddrV6,
        Key::Sport,
        Key::Dport,
        Key::Oldstate,
        Key::Newstate,
        Key::State,
        Key::Reason,
        Key::Skbaddr,
        Key::RxSk,
    ];

    /// The field's name in the `format` file.
    pub fn name(self) -> &'static str {
        match self {
            Key::CommonPid => "common_pid",
            Key::CommonFlags => "common_flags",
            Key::Skaddr => "skaddr",
            Key::Protocol => "protocol",
            Key::Family => "family",
            Key::Saddr => "saddr",
            Key::Daddr => "daddr",
            Key::SaddrV6 => "saddr_v6",
            Key::DaddrV6 => "daddr_v6",
            Key::Sport => "sport",
            Key::Dport => "dport",
            Key::Oldstate => "oldstate",
            Key::Newstate => "newstate",
            Key::State => "state",
            Key::Reason => "reason",
            Key::Skbaddr => "skbaddr",
            Key::RxSk => "rx_sk",
        }
    }
}

impl Format {
    /// Parse the text of a `format` file; `None` without a name or ID.
    pub fn parse(text: &str) -> Option<Format> {
        let mut f = Format::default();
        let mut id = None;
        for line in text.lines() {
            let l = line.trim();
            if let Some(n) = l.strip_prefix("name:") {
                f.name = n.trim().to_string();
            } else if let Some(n) = l.strip_prefix("ID:") {
                id = n.trim().parse().ok();
            } else if l.starts_with("field:") {
                f.fields.extend(parse_field(l));
            } else if let Some(p) = l.strip_prefix("print fmt:") {
                f.symbols = parse_symbols(p);
            }
        }
        f.id = id?;
        f.index = f
            .fields
            .iter()
            .enumerate()
            .map(|(i, x)| (x.name.clone(), i))
            .collect();
        for k in Key::ALL {
            f.slots[k as usize] = f.field(k.name()).map(|x| (x.offset, x.size));
        }
        (!f.name.is_empty()).then_some(f)
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(*self.index.get(name)?)
    }

    /// The symbol the print format gives `value` of field `name`.
    pub fn symbol(&self, name: &str, value: u64) -> Option<&str> {
        self.symbols.get(name)?.get(&value).map(String::as_str)
    }
}

/// `field:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';').map(str::trim) {
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let decl = decl?;
    // The name is the last word, up to an array suffix.
    let cut = decl.find('[').unwrap_or(decl.len());
    let head = decl[..cut].trim_end();
    let split = head.rfind(|c: char| c.is_whitespace() || c == '*')?;
    let name = head[split + 1..].to_string();
    let ctype = head[..=split].trim().to_string();
    Some(Field {
        name,
        ctype,
        offset: offset?,
        size: size?,
        signed,
    })
}

/// Every `__print_symbolic(REC->NAME, { N, "SYM" }, …)` of a print format
/// whose entries are numbers.
fn parse_symbols(p: &str) -> HashMap<String, HashMap<u64, String>> {
    let mut out: HashMap<String, HashMap<u64, String>> = HashMap::new();
    let key = "__print_symbolic(REC->";
    let mut rest = p;
    // Bounded by the text: each turn moves past one occurrence.
    while let Some(i) = rest.find(key) {
        rest = &rest[i + key.len()..];
        let Some(comma) = rest.find(',') else { break };
        let name = rest[..comma].trim().to_string();
        // The entries run to the closing parenthesis of this call; symbols
        // are quoted and contain no parenthesis.
        let end = rest.find(')').unwrap_or(rest.len());
        let body = &rest[comma..end];
        let map = out.entry(name).or_default();
        for entry in body.split('{').skip(1) {
            let entry = entry.split('}').next().unwrap_or("");
            let mut it = entry.splitn(2, ',');
            let (Some(n), Some(s)) = (it.next(), it.next()) else {
                continue;
            };
            let n = n.trim();
            let parsed = n
                .strip_prefix("0x")
                .map_or_else(|| n.parse().ok(), |h| u64::from_str_radix(h, 16).ok());
            if let Some(v) = parsed {
                map.insert(v, s.trim().trim_matches('"').to_string());
            }
        }
        rest = &rest[end.min(rest.len())..];
    }
    out.retain(|_, m| !m.is_empty());
    out
}

/// One record's bytes read through its format.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The format of this record's event.
    pub format: &'a Format,
    /// The record's bytes (the ring buffer's payload; may be padded).
    pub data: &'a [u8],
}

impl<'a> Record<'a> {
    /// The bytes of field `key`, if the format has it and the record
    /// holds it.
    pub fn bytes(&self, key: Key) -> Option<&'a [u8]> {
        let (offset, size) = self.format.slots[key as usize]?;
        self.data.get(offset..offset + size)
    }

    /// Field `key` as an unsigned number (1, 2, 4 or 8 bytes, this
    /// machine's byte order, as the kernel wrote it).
    pub fn uint(&self, key: Key) -> Option<u64> {
        let b = self.bytes(key)?;
        Some(match b.len() {
            1 => u64::from(b[0]),
            2 => u64::from(u16::from_ne_bytes([b[0], b[1]])),
            4 => u64::from(u32::from_ne_bytes(b.try_into().ok()?)),
            8 => u64::from_ne_bytes(b.try_into().ok()?),
            _ => return None,
        })
    }

    /// Field `key` as a signed number, sign-extended from its size.
    pub fn int(&self, key: Key) -> Option<i64> {
        let b = self.bytes(key)?;
        Some(match b.len() {
            1 => i64::from(b[0] as i8),
            2 => i64::from(i16::from_ne_bytes([b[0], b[1]])),
            4 => i64::from(i32::from_ne_bytes(b.try_into().ok()?)),
            8 => i64::from_ne_bytes(b.try_into().ok()?),
            _ => return None,
        })
    }

    /// The print format's symbol for field `key`'s value, else the number.
    pub fn symbol(&self, key: Key) -> Option<String> {
        let v = self.uint(key)?;
        Some(
            self.format
                .symbol(key.name(), v)
                .map_or_else(|| v.to_string(), str::to_string),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET_STATE: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;

print fmt: \"x=%s r=%s s=%s\", __print_symbolic(REC->family, { 2, \"AF_INET\" }, { 10, \"AF_INET6\" }), __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, { 0x3, \"TCP_RFC7323_PAWS\" }), REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }) : \"UNKNOWN\"
";

    #[test]
    fn fields_and_symbols_come_from_the_text() {
        let f = Format::parse(SET_STATE).unwrap();
        assert_eq!((f.name.as_str(), f.id), ("inet_sock_set_state", 2287));
        let sk = f.field("skaddr").unwrap();
        assert_eq!(
            (sk.offset, sk.size, sk.ctype.as_str()),
            (8, 8, "const void *")
        );
        let sa = f.field("saddr").unwrap();
        assert_eq!((sa.offset, sa.size, sa.ctype.as_str()), (32, 4, "__u8"));
        assert!(f.field("oldstate").unwrap().signed);
        assert_eq!(f.field("reason").unwrap().ctype, "enum sk_rst_reason");
        assert_eq!(f.symbol("family", 10), Some("AF_INET6"));
        assert_eq!(f.symbol("reason", 3), Some("TCP_RFC7323_PAWS"));
        // Symbolic names without numbers are left out.
        assert!(!f.symbols.contains_key("state"));
        let mut data = vec![0u8; 40];
        data[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        data[24..26].copy_from_slice(&12345u16.to_ne_bytes());
        data[28..32].copy_from_slice(&3u32.to_ne_bytes());
        let r = Record {
            format: &f,
            data: &data,
        };
        assert_eq!(r.int(Key::Oldstate), Some(-1));
        assert_eq!(r.uint(Key::Sport), Some(12345));
        assert_eq!(r.symbol(Key::Reason).as_deref(), Some("TCP_RFC7323_PAWS"));
        // A field this format does not have.
        assert_eq!(r.uint(Key::Dport), None);
        assert!(Format::parse("ID: 3").is_none());
    }
}
