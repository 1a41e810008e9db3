#!/usr/bin/env bash
# Per-file memory through a real mount (issue 17, item 3): the sectorfs
# daemon's RSS (VmRSS of the pid `sectorfs stats --json` reports) before and
# after creating N files of SIZE bytes (default 200,000 of 100 bytes, 1,000
# per directory), divided by N. The engine-level figure (no FUSE, with the
# allocator's own counts) is `per_file`; this one adds what the daemon keeps
# per file beyond the engine (none expected: the kernel holds the dentries).
#
# Usage: benches/per_file_mount.sh [SECTORFS_BIN] [N] [SIZE]
set -euo pipefail
bin=${1:-target/release/sectorfs}
n=${2:-200000}
size=${3:-100}
per=1000
mp=$(mktemp -d /tmp/per_file_mount.XXXXXX)
cleanup() { "$bin" unmount "$mp" 2>/dev/null || umount "$mp" 2>/dev/null || true; rmdir "$mp" 2>/dev/null || true; }
trap cleanup EXIT
"$bin" mount "$mp" --size 4G --max-files $((n + n / per + 16))
pid=$("$bin" stats "$mp" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$pid/status"; }
before=$(rss)
start=$(date +%s.%N)
python3 - "$mp" "$n" "$per" "$size" <<'EOF'
import os, sys
mp, n, per, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
body = b"x" * size
for d in range((n + per - 1) // per):
    os.mkdir(f"{mp}/d{d:04}")
for i in range(n):
    fd = os.open(f"{mp}/d{i // per:04}/file{i:06}.o", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    if size:
        os.write(fd, body)
    os.close(fd)
EOF
end=$(date +%s.%N)
sleep 1
after=$(rss)
python3 -c "import sys; b,a,n,t=map(float,sys.argv[1:]); print(f'mount size=$size files={int(n)} rss_per_file={(a-b)/n:.0f} rss_before_mib={b/2**20:.1f} rss_after_mib={a/2**20:.1f} secs={t:.1f}')" \
    "$before" "$after" "$n" "$(echo "$end - $start" | bc)"
