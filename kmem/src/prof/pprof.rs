//! pprof's profile format (`profile.proto` of google/pprof): a protobuf
//! message, gzip-compressed. Written by hand: a small protobuf encoder, and
//! gzip with stored (uncompressed) deflate blocks and its CRC-32, which
//! every gzip reader accepts. `pprof -top file.heap.pb.gz` and
//! `go tool pprof` read it.
//!
//! The profile has two sample types, `inuse_objects/count` and
//! `inuse_space/bytes` (as Go's heap profiles), one location per return
//! address with its function already named (the mappings say
//! `has_functions`, so readers do not symbolize again).

use super::FixedMap;

use super::heap::HeapProfile;

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    /// A varint field (skipped when 0, as proto3 does).
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    /// A packed repeated varint field.
    fn packed(&mut self, field: u32, vs: impl Iterator<Item = u64>) {
        let mut p = Msg::default();
        for v in vs {
            p.varint(v);
        }
        self.bytes(field, &p.0);
    }
}

/// The string table: index 0 is "".
struct Strings {
    index: FixedMap<String, u64>,
    list: Vec<String>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            index: FixedMap::from_iter([(String::new(), 0)]),
            list: vec![String::new()],
        }
    }

    fn id(&mut self, s: &str) -> u64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as u64;
        self.index.insert(s.to_string(), i);
        self.list.push(s.to_string());
        i
    }
}

fn value_type(strings: &mut Strings, ty: &str, unit: &str) -> Msg {
    let mut m = Msg::default();
    m.uint(1, strings.id(ty));
    m.uint(2, strings.id(unit));
    m
}

/// The profile as a `perftools.profiles.Profile` message.
pub(crate) fn message(p: &HeapProfile) -> Vec<u8> {
    let mut s = Strings::new();
    let mut out = Msg::default();
    out.msg(1, value_type(&mut s, "inuse_objects", "count"));
    out.msg(1, value_type(&mut s, "inuse_space", "bytes"));
    let mut locs: FixedMap<usize, u64> = FixedMap::default();
    let mut funcs: FixedMap<String, u64> = FixedMap::default();
    let mut loc_msgs = Msg::default();
    let mut func_msgs = Msg::default();
    for st in &p.stacks {
        let mut ids = Vec::with_capacity(st.frames.len());
        for f in &st.frames {
            let next = locs.len() as u64 + 1;
            let id = *locs.entry(f.addr).or_insert_with(|| {
                let nf = funcs.len() as u64 + 1;
                let fid = *funcs.entry(f.function.clone()).or_insert_with(|| {
                    let mut fm = Msg::default();
                    fm.uint(1, nf);
                    fm.uint(2, s.id(&f.function));
                    fm.uint(3, s.id(&f.function));
                    fm.uint(4, s.id(&f.object));
                    func_msgs.msg(5, fm);
                    nf
                });
                let mut line = Msg::default();
                line.uint(1, fid);
                let mut lm = Msg::default();
                lm.uint(1, next);
                lm.uint(2, 1);
                lm.uint(3, f.addr as u64);
                lm.msg(4, line);
                loc_msgs.msg(4, lm);
                next
            });
            ids.push(id);
        }
        let mut sm = Msg::default();
        sm.packed(1, ids.into_iter());
        sm.packed(
            2,
            [st.objects.round() as u64, st.bytes.round() as u64].into_iter(),
        );
        out.msg(2, sm);
    }
    // One mapping covering everything, its functions known.
    let mut mm = Msg::default();
    mm.uint(1, 1);
    mm.uint(2, 0);
    mm.uint(3, u64::MAX >> 1);
    mm.uint(5, s.id("[bsdalloc]"));
    mm.uint(7, 1);
    out.msg(3, mm);
    out.0.extend_from_slice(&loc_msgs.0);
    out.0.extend_from_slice(&func_msgs.0);
    let period_type = value_type(&mut s, "space", "bytes");
    let comment = s.id(&format!(
        "bsdalloc kmem heap profile: live blocks sampled every {} bytes on average",
        p.interval
    ));
    for st in std::mem::take(&mut s.list) {
        out.bytes(6, st.as_bytes());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    out.uint(9, now);
    out.msg(11, period_type);
    out.uint(12, p.interval);
    out.packed(13, [comment].into_iter());
    out.0
}

/// The CRC-32 of gzip (IEEE, reflected, polynomial 0xedb88320).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// `data` as a gzip member of stored deflate blocks.
pub(crate) fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let n = c.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The profile, gzip-compressed.
pub(crate) fn encode(p: &HeapProfile) -> Vec<u8> {
    gzip_stored(&message(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_check_string() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn stored_gzip_holds_the_data() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        let gz = gzip_stored(&data);
        // Header, 4 blocks of 5-byte headers, trailer.
        assert_eq!(gz.len(), 10 + data.len() + 4 * 5 + 8);
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    }
}
