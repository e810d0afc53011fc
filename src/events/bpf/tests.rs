use super::*;

/// This machine's kernel (6.18): `events/sock/inet_sock_set_state/format`.
const SET_STATE: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s\", __print_symbolic(REC->family, { 2, \"AF_INET\" })
";

fn shared() -> Shared {
    Shared {
        rings: 5,
        lost: 6,
        perf_regs: 0xab20,
        regs_size: 168,
        tai: true,
    }
}

#[test]
fn the_record_is_copied_to_its_last_field_in_whole_words() {
    let f = Format::parse(SET_STATE).unwrap();
    assert_eq!(record_size(&f), 72);
}

/// A port filter becomes loads of the port fields at their offsets and
/// comparisons with the ports; a field the verifier would refuse to read
/// (misaligned, or among the first 8 bytes) leaves the program unfiltered
/// rather than unloadable.
#[test]
fn filters_compile_to_the_fields_of_the_format() {
    let f = Format::parse(SET_STATE).unwrap();
    let k = Filter::ports(&[6379]).kernel_filter(&f).unwrap();
    assert!(compiles(&f, &k));
    let with = program(&f, Some(&k), shared()).unwrap();
    let without = program(&f, None, shared()).unwrap();
    // protocol (1 test + goto) and sport/dport (2 tests + goto): 3 loads,
    // 3 jumps, 2 gotos.
    assert_eq!(with.len(), without.len() + 8);
    // ldxh r2, [r6 + 24] (sport) and [r6 + 26] (dport), compared with 6379.
    let words: Vec<(u8, u8, i16, i32)> = with
        .iter()
        .map(|w| {
            (
                *w as u8,
                (w >> 8) as u8,
                (w >> 16) as u16 as i16,
                (w >> 32) as u32 as i32,
            )
        })
        .collect();
    assert!(words.contains(&(0x69, 0x62, 24, 0)), "{words:x?}");
    assert!(words.contains(&(0x69, 0x62, 26, 0)));
    let jeq_port = |w: &&(u8, u8, i16, i32)| w.0 == 0x15 && w.1 == 0x02 && w.3 == 6379;
    assert_eq!(words.iter().filter(jeq_port).count(), 2);
    let moved =
        Format::parse(&SET_STATE.replace("offset:24;\tsize:2", "offset:25;\tsize:2")).unwrap();
    let k = Filter::ports(&[6379]).kernel_filter(&moved).unwrap();
    assert!(!compiles(&moved, &k));
    assert_eq!(
        program(&moved, Some(&k), shared()).unwrap().len(),
        program(&moved, None, shared()).unwrap().len()
    );
}

#[test]
fn a_ring_record_splits_into_header_and_record() {
    let mut b = vec![0u8; HEADER + 8];
    b[0..8].copy_from_slice(&123u64.to_ne_bytes());
    b[16..20].copy_from_slice(&1u32.to_ne_bytes());
    b[24..30].copy_from_slice(b"client");
    b[HEADER..HEADER + 2].copy_from_slice(&2287u16.to_ne_bytes());
    let r = Raw::parse(&b).unwrap();
    assert_eq!((r.ts, r.cpu, r.comm), (123, 1, &b"client"[..]));
    assert_eq!(r.data.len(), 8);
    assert!(Raw::parse(&b[..30]).is_none());
}
