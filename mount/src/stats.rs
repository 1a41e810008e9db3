//! `sectorfs stats`: how a running mount reports its counters.
//!
//! The daemon answers `getxattr(<mountpoint>, "user.sectorfs.stats")` on the
//! root directory with a flat JSON object of unsigned integers (see
//! [`FIELDS`]). The attribute is virtual: it is not listed by `listxattr`,
//! and setting or removing it fails with `EPERM`. Anyone who may read the
//! root directory may read it, e.g. `getfattr -n user.sectorfs.stats /mnt`.
//! The CLI reads it and prints it as a table, or as the JSON itself
//! (`--json`). Platform-neutral: rendering and parsing are tested everywhere.

use crate::cli::format_bytes;

/// The virtual extended attribute on the root directory.
pub(crate) const STATS_XATTR: &str = "user.sectorfs.stats";

/// The prefix of the per-opcode request counters in the JSON object.
pub(crate) const REQ_PREFIX: &str = "req_";

/// The counters, in output order, with a human label each.
pub(crate) const FIELDS: [(&str, &str); 12] = [
    ("used_bytes", "used"),
    ("free_bytes", "free"),
    ("limit_bytes", "limit"),
    ("peak_bytes", "peak used"),
    ("logical_bytes", "file bytes (logical)"),
    ("mapped_bytes", "memory mapped"),
    ("sectors", "sectors in use"),
    ("sector_size", "sector size"),
    ("sector_allocs", "sector allocations"),
    ("files", "inodes in use"),
    ("max_files", "inode limit"),
    ("pid", "daemon pid"),
];

/// A snapshot of a mount's counters, by [`FIELDS`] name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Snapshot(pub(crate) Vec<(String, u64)>);

impl Snapshot {
    /// The value of `key`, if present.
    pub(crate) fn get(&self, key: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }

    /// Appends the request counters as `req_<opcode>`.
    #[cfg_attr(windows, allow(dead_code))] // the Linux frontend counts
    pub(crate) fn add_requests(&mut self, req: &crate::requests::Requests) {
        self.0.extend(req.snapshot().map(|(name, n)| (format!("{REQ_PREFIX}{name}"), n)));
    }

    /// The flat JSON object `{"key":value,...}`.
    pub(crate) fn to_json(&self) -> String {
        let body: Vec<String> = self.0.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    /// Parses what [`Snapshot::to_json`] writes (a flat object of unsigned
    /// integers; whitespace allowed).
    pub(crate) fn from_json(s: &str) -> Result<Snapshot, String> {
        let inner = s
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| format!("not a JSON object: {s:?}"))?;
        let mut out = Vec::new();
        for item in inner.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v) = item.split_once(':').ok_or_else(|| format!("bad JSON member {item:?}"))?;
            let k = k.trim().strip_prefix('"').and_then(|t| t.strip_suffix('"'));
            let k = k.ok_or_else(|| format!("bad JSON key in {item:?}"))?;
            let v: u64 = v.trim().parse().map_err(|_| format!("bad JSON number in {item:?}"))?;
            out.push((k.to_string(), v));
        }
        Ok(Snapshot(out))
    }

    /// What `sectorfs stats` prints: the JSON object, or the table.
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.to_table());
        }
    }

    /// A human-readable table, one counter per line.
    pub(crate) fn to_table(&self) -> String {
        let mut s = String::new();
        for (key, label) in FIELDS {
            if let Some(v) = self.get(key) {
                let shown = if key.ends_with("_bytes") || key == "sector_size" {
                    format!("{} ({v} bytes)", format_bytes(v))
                } else {
                    v.to_string()
                };
                s.push_str(&format!("{label:<22}{shown}\n"));
            }
        }
        if let (Some(used), Some(limit)) = (self.get("used_bytes"), self.get("limit_bytes")) {
            if limit > 0 {
                s.push_str(&format!("{:<22}{:.1}%\n", "use", used as f64 * 100.0 / limit as f64));
            }
        }
        let reqs: Vec<(&str, u64)> =
            self.0.iter().filter_map(|(k, v)| Some((k.strip_prefix(REQ_PREFIX)?, *v))).collect();
        if !reqs.is_empty() {
            let total: u64 = reqs.iter().map(|&(_, v)| v).sum();
            s.push_str(&format!("{:<22}{total}\n", "requests served"));
            let mut busy: Vec<_> = reqs.into_iter().filter(|&(_, v)| v > 0).collect();
            busy.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            for line in busy.chunks(4) {
                let items: Vec<String> = line.iter().map(|(k, v)| format!("{k} {v}")).collect();
                s.push_str(&format!("{:<22}{}\n", "", items.join(", ")));
            }
        }
        s
    }
}

/// The snapshot of an engine's counters for the process `pid`.
pub(crate) fn snapshot(engine: &engine::Engine, pid: u32) -> Snapshot {
    let st = engine.stats();
    let p = st.pool;
    let vals = [
        ("used_bytes", p.used),
        ("free_bytes", p.limit.saturating_sub(p.used)),
        ("limit_bytes", p.limit),
        ("peak_bytes", p.peak),
        ("logical_bytes", st.logical_bytes),
        ("mapped_bytes", p.mapped),
        ("sectors", p.sectors),
        ("sector_size", p.sector_size),
        ("sector_allocs", p.allocs),
        ("files", st.inodes),
        ("max_files", st.max_inodes),
        ("pid", u64::from(pid)),
    ];
    Snapshot(vals.iter().map(|&(k, v)| (k.to_string(), v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let e = engine::Engine::new(engine::Config::default()).unwrap();
        let s = snapshot(&e, 42);
        let j = s.to_json();
        assert!(j.starts_with("{\"used_bytes\":"), "{j}");
        assert_eq!(Snapshot::from_json(&j), Ok(s.clone()));
        assert_eq!(s.get("pid"), Some(42));
        assert_eq!(s.get("files"), Some(1));
        assert_eq!(s.0.len(), FIELDS.len());
        for (k, _) in FIELDS {
            assert!(s.get(k).is_some(), "{k} missing");
        }
    }

    #[test]
    fn json_parse_whitespace_and_errors() {
        let s = Snapshot::from_json(" { \"a\" : 1 , \"b\":2 } ").unwrap();
        assert_eq!(s.get("a"), Some(1));
        assert_eq!(s.get("b"), Some(2));
        assert_eq!(Snapshot::from_json("{}"), Ok(Snapshot(vec![])));
        for bad in ["", "[]", "{a:1}", "{\"a\":x}", "{\"a\"}", "{\"a\":-1}"] {
            assert!(Snapshot::from_json(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn table_lists_every_field() {
        let s = Snapshot(vec![("used_bytes".into(), 1 << 20), ("limit_bytes".into(), 4 << 20), ("files".into(), 3)]);
        let t = s.to_table();
        assert!(t.contains("used                  1 MiB (1048576 bytes)"), "{t}");
        assert!(t.contains("inodes in use         3"), "{t}");
        assert!(t.contains("use                   25.0%"), "{t}");
    }
}
