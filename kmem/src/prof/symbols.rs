//! Symbol names for return addresses, at dump time only: the mappings of
//! `/proc/self/maps`, and each mapped ELF object's `.symtab` and `.dynsym`
//! (read from its file, 64-bit little-endian), with Rust's legacy mangling
//! undone. No DWARF: a function name per frame (inlined frames fold into
//! their caller).

use super::FixedMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

struct Map {
    start: usize,
    end: usize,
    offset: usize,
    path: String,
}

struct Elf {
    /// PT_LOAD segments: (file offset, vaddr, file size).
    loads: Vec<(u64, u64, u64)>,
    /// Function symbols sorted by start: (start, size, name).
    syms: Vec<(u64, u64, String)>,
}

/// Resolves addresses of this process; caches each object's symbols.
pub(crate) struct Resolver {
    maps: Vec<Map>,
    objs: FixedMap<String, Option<Elf>>,
}

/// A resolved frame: function name and the object's file name.
pub(crate) struct Resolved {
    pub function: String,
    pub object: String,
}

impl Resolver {
    pub(crate) fn new() -> Resolver {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut maps = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(range), Some(perms), Some(off)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !perms.contains('x') {
                continue;
            }
            let path = it.nth(2).unwrap_or("").to_string();
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let hex = |s: &str| usize::from_str_radix(s, 16).ok();
            if let (Some(start), Some(end), Some(offset)) = (hex(a), hex(b), hex(off)) {
                maps.push(Map {
                    start,
                    end,
                    offset,
                    path,
                });
            }
        }
        Resolver {
            maps,
            objs: FixedMap::default(),
        }
    }

    /// The function holding return address `ra` (looked up at `ra - 1`, the
    /// call instruction).
    pub(crate) fn resolve(&mut self, ra: usize) -> Resolved {
        let a = ra.wrapping_sub(1);
        let Some(m) = self.maps.iter().find(|m| a >= m.start && a < m.end) else {
            return Resolved {
                function: format!("{ra:#x}"),
                object: String::new(),
            };
        };
        let object = m.path.rsplit('/').next().unwrap_or(&m.path).to_string();
        let fo = (a - m.start + m.offset) as u64;
        let path = m.path.clone();
        let elf = self
            .objs
            .entry(path.clone())
            .or_insert_with(|| load_elf(&path));
        let name = elf.as_ref().and_then(|e| {
            let &(poff, pvaddr, _) = e
                .loads
                .iter()
                .find(|&&(o, _, sz)| fo >= o && fo < o + sz.max(1))?;
            let v = fo - poff + pvaddr;
            let i = e.syms.partition_point(|s| s.0 <= v);
            let (start, size, name) = e.syms.get(i.checked_sub(1)?)?;
            (v < start + (*size).max(1)).then(|| demangle(name))
        });
        Resolved {
            function: name.unwrap_or_else(|| format!("{object}+{fo:#x}")),
            object,
        }
    }
}

fn rd(f: &File, off: u64, len: usize) -> Option<Vec<u8>> {
    if len > 1 << 30 {
        return None;
    }
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, off).ok()?;
    Some(v)
}

fn u16le(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u64
}
fn u32le(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4])) as u64
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// An ELF object's load segments and function symbols.
fn load_elf(path: &str) -> Option<Elf> {
    if !path.starts_with('/') {
        return None;
    }
    let f = File::open(path).ok()?;
    let h = rd(&f, 0, 64)?;
    // ELF, 64-bit, little-endian.
    if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64le(&h, 0x20), u16le(&h, 0x36), u16le(&h, 0x38));
    let (shoff, shentsize, shnum) = (u64le(&h, 0x28), u16le(&h, 0x3a), u16le(&h, 0x3c));
    let ph = rd(&f, phoff, (phentsize * phnum) as usize)?;
    let mut loads = Vec::new();
    for i in 0..phnum as usize {
        let p = &ph[i * phentsize as usize..];
        if u32le(p, 0) == 1 {
            loads.push((u64le(p, 8), u64le(p, 0x10), u64le(p, 0x20)));
        }
    }
    let sh = rd(&f, shoff, (shentsize * shnum) as usize)?;
    let mut syms = Vec::new();
    for i in 0..shnum as usize {
        let s = &sh[i * shentsize as usize..];
        let ty = u32le(s, 4);
        // SHT_SYMTAB, SHT_DYNSYM.
        if ty != 2 && ty != 11 {
            continue;
        }
        let (off, size, link, entsize) = (
            u64le(s, 0x18),
            u64le(s, 0x20),
            u32le(s, 0x28),
            u64le(s, 0x38),
        );
        let Some(l) = sh.get(link as usize * shentsize as usize..) else {
            continue;
        };
        let Some(strtab) = rd(&f, u64le(l, 0x18), u64le(l, 0x20) as usize) else {
            continue;
        };
        let Some(tab) = rd(&f, off, size as usize) else {
            continue;
        };
        let entsize = entsize.max(24) as usize;
        for e in tab.chunks_exact(entsize) {
            // STT_FUNC, defined.
            if e[4] & 0xf != 2 || u16le(e, 6) == 0 {
                continue;
            }
            let name_off = u32le(e, 0) as usize;
            let Some(rest) = strtab.get(name_off..) else {
                continue;
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let name = String::from_utf8_lossy(&rest[..end]).into_owned();
            syms.push((u64le(e, 8), u64le(e, 16), name));
        }
    }
    syms.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    syms.dedup_by(|b, a| a.0 == b.0);
    Some(Elf { loads, syms })
}

/// Rust's legacy mangling (`_ZN...17h<hash>E`) undone, the hash dropped;
/// other names as they are.
pub(crate) fn demangle(name: &str) -> String {
    let Some(mut rest) = name.strip_prefix("_ZN") else {
        return name.to_string();
    };
    let mut parts: Vec<String> = Vec::new();
    while !rest.starts_with('E') {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(n) = rest[..digits].parse::<usize>() else {
            return name.to_string();
        };
        let Some(part) = rest.get(digits..digits + n) else {
            return name.to_string();
        };
        parts.push(part.to_string());
        rest = &rest[digits + n..];
    }
    if parts.last().is_some_and(|p| {
        p.len() == 17 && p.starts_with('h') && p[1..].bytes().all(|b| b.is_ascii_hexdigit())
    }) {
        parts.pop();
    }
    let parts: Vec<String> = parts.iter().map(|p| unescape(p)).collect();
    parts.join("::")
}

fn unescape(p: &str) -> String {
    let p = p
        .strip_prefix("_$")
        .map_or(p.to_string(), |r| format!("${r}"));
    let mut out = String::new();
    let mut s = p.as_str();
    while !s.is_empty() {
        if let Some(r) = s.strip_prefix("..") {
            out.push_str("::");
            s = r;
        } else if s.starts_with('$') {
            let Some(end) = s[1..].find('$') else {
                out.push_str(s);
                break;
            };
            let code = &s[1..=end];
            out.push_str(match code {
                "LT" => "<",
                "GT" => ">",
                "RF" => "&",
                "BP" => "*",
                "C" => ",",
                "SP" => "@",
                "u20" => " ",
                "u27" => "'",
                "u5b" => "[",
                "u5d" => "]",
                "u7b" => "{",
                "u7d" => "}",
                "u7e" => "~",
                "u3b" => ";",
                "u2b" => "+",
                "u22" => "\"",
                _ => code,
            });
            s = &s[end + 2..];
        } else {
            let n = s.find(['$', '.']).unwrap_or(s.len()).max(1);
            out.push_str(&s[..n]);
            s = &s[n..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn legacy_rust_names_demangle() {
        assert_eq!(
            demangle("_ZN4kmem4prof6sample7capture17h0123456789abcdefE"),
            "kmem::prof::sample::capture"
        );
        assert_eq!(
            demangle("_ZN63_$LT$kmem..global..Kmem$u20$as$u20$core..alloc..GlobalAlloc$GT$5alloc17h0123456789abcdefE"),
            "<kmem::global::Kmem as core::alloc::GlobalAlloc>::alloc"
        );
        assert_eq!(demangle("PyDict_SetItem"), "PyDict_SetItem");
    }
}
