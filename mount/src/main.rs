//! `sectorfs`: mount a sectorfs RAM disk. (Until the FUSE frontend lands, an engine demo.)
use engine::{Config, Engine, ROOT};

fn main() -> anyhow::Result<()> {
    let e = Engine::new(Config::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let f = e.create(ROOT, b"demo", 0o644, 0, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let chunk = vec![7u8; 1 << 20];
    let t = std::time::Instant::now();
    for i in 0..256u64 {
        e.write(f.ino, i << 20, &chunk).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    println!("sectorfs engine demo: appended 256 MiB in {:?}; {:?}", t.elapsed(), e.stats());
    Ok(())
}
