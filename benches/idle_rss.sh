#!/usr/bin/env bash
# An idle disk's resident memory after a fragmenting delete
# (docs/BENCHMARKS.md, "Memory given back: huge pages"):
#   benches/idle_rss.sh target/release/sectorfs [MOUNTPOINT] [MINUTES]
# mounts a 3 GiB disk on a fresh directory, writes 20,000 files of 64 KiB,
# deletes every other one, then prints the daemon's VmRSS every minute while
# the disk is idle, and unmounts.
set -euo pipefail
bin=${1:?usage: idle_rss.sh SECTORFS [MOUNTPOINT] [MINUTES]}
mp=${2:-$(mktemp -d /tmp/idle-rss-XXXXXX)}
minutes=${3:-7}
"$bin" mount "$mp" --size 3G
trap '"$bin" unmount "$mp"' EXIT
pid=$("$bin" stats "$mp" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
python3 - "$mp" <<'PY'
import os, sys
mp = sys.argv[1]
d = b"\xa5" * 65536
for i in range(20000):
    with open(f"{mp}/f{i}", "wb") as f:
        f.write(d)
for i in range(0, 20000, 2):
    os.unlink(f"{mp}/f{i}")
PY
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
echo "after the deletes: rss $(rss) kB"
for m in $(seq 1 "$minutes"); do
    sleep 60
    echo "t=$((m * 60))s: rss $(rss) kB"
done
