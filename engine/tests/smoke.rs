use engine::{Config, Engine, ROOT};

#[test]
fn write_read_grow_truncate() {
    let e = Engine::new(Config { sector_size: 4096, max_bytes: 64 << 20, ..Config::default() }).unwrap();
    let a = e.create(ROOT, b"f", 0o644, 0, 0).unwrap();
    let mut model = Vec::new();
    let mut x: u64 = 1;
    for i in 0..2000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 33) % 200_000;
        let len = ((x >> 13) % 9000) as usize;
        let data: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        if i % 17 == 0 {
            let nl = (x >> 20) % 150_000;
            e.setattr(a.ino, &engine::SetAttr { size: Some(nl), ..Default::default() }).unwrap();
            model.resize(nl as usize, 0);
        } else {
            e.write(a.ino, off, &data).unwrap();
            let end = off as usize + len;
            if model.len() < end && len > 0 {
                model.resize(end, 0);
            }
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        let mut buf = vec![0u8; model.len() + 10];
        let n = e.read(a.ino, 0, &mut buf).unwrap();
        assert_eq!(n, model.len(), "len at step {i}");
        assert!(buf[..n] == model[..], "content at step {i}");
    }
    e.unlink(ROOT, b"f").unwrap();
    e.forget(a.ino, 1);
    assert_eq!(e.stats().pool.used, 0);
}
