#!/usr/bin/env bash
# `make demo`: a private MariaDB with sample data, one backup with storagetapper, and a check
# that every chunk file decodes and holds exactly the rows the source has.
#
#   1. start a sandbox server in target/demo/mariadb on 127.0.0.1:33306 (stopped again on exit)
#   2. create database `demo`: customers (200k rows), orders (500k, composite key),
#      events (20k, no primary key: one chunk), generated with the SEQUENCE engine
#   3. storagetapper backup -m manifests/demo.toml
#   4. storagetapper list / status, the backup's file tree, a sample row per table
#   5. verify: sha256 and row count of every chunk against metadata.json, and each table's
#      decoded line count against SELECT COUNT(*) on the source (with the manifest's `where`)
#   6. restore drill: storagetapper restore into a new database `demo_restored` on the same
#      server, then CHECKSUM TABLE of every table against the source. A table the manifest
#      restricts (`columns`, `exclude_columns` or `where`) cannot match the whole source table:
#      its row count is compared with the filtered source count instead, plus a CRC32 sum over
#      the backed-up columns
#
# Exit status: 0 all tables match, 1 a mismatch, 2 anything else failed.
set -euo pipefail

cd "$(dirname "$0")/.."
ST=${STORAGETAPPER:-./target/debug/storagetapper}
MANIFEST=manifests/demo.toml
DEMO=target/demo
SANDBOX=$DEMO/mariadb
PORT=33306
BACKUPS=$DEMO/backups # = [destination] url of the manifest
STATE=$DEMO/state.db  # = [state] url of the manifest

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

[ -x "$ST" ] || die "$ST is missing: run \`cargo build\` (or \`make demo\`) first"
for tool in zstd sha256sum awk; do
    command -v "$tool" >/dev/null 2>&1 || die "\`$tool\` is needed (\`make deps\` installs zstd)"
done
MARIADB=$(command -v mariadb || true)
[ -n "$MARIADB" ] || die "the \`mariadb\` client is needed (\`make deps\` installs it)"

sql() {
    "$MARIADB" --no-defaults --default-character-set=utf8mb4 -uroot -S "$SANDBOX/mysqld.sock" "$@"
}

cleanup() {
    local rc=$?
    trap - EXIT
    scripts/sandbox.sh stop "$SANDBOX" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
step "Starting a private MariaDB in $SANDBOX on 127.0.0.1:$PORT"
# A server left running by an interrupted demo would hold the port.
scripts/sandbox.sh stop "$SANDBOX" >/dev/null 2>&1 || true
rm -rf "$SANDBOX" "$BACKUPS" "$STATE" "$STATE-wal" "$STATE-shm" "$STATE-journal"
mkdir -p "$DEMO"
scripts/sandbox.sh start "$SANDBOX" "$PORT"

# ---------------------------------------------------------------------------------------------
step "Creating database demo (customers 200k, orders 500k, events 20k rows)"
t0=$(now)
sql >/dev/null <<'SQL'
-- Bulk load outside the binlog (faster); the binlog stays on for the backup's position.
SET SESSION sql_log_bin = 0;
CREATE DATABASE demo CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE demo;

CREATE TABLE customers (
  id INT UNSIGNED NOT NULL PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(255) NOT NULL,
  created DATETIME NOT NULL,
  balance DECIMAL(12,2) NOT NULL,
  KEY idx_email (email)
) ENGINE=InnoDB;
INSERT INTO customers
SELECT seq,
       CONCAT(ELT(1 + seq % 8, 'Zoë', 'José', 'Łukasz', 'Søren', 'Ana', '明 Li', 'Ольга', 'Bob'),
              ' ', ELT(1 + seq DIV 8 % 5, 'Müller', 'García', 'O''Brien', 'Nguyễn', 'Smith "Jr"')),
       CONCAT('user', seq, '@example.com'),
       TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq * 613 SECOND,
       (CAST(seq AS SIGNED) * 7919 % 1000000 - 50000) / 100
FROM seq_1_to_200000;

CREATE TABLE orders (
  customer_id INT UNSIGNED NOT NULL,
  order_no SMALLINT UNSIGNED NOT NULL,
  status ENUM('new', 'paid', 'shipped', 'cancelled') NOT NULL,
  amount DECIMAL(10,2) NOT NULL,
  placed TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  note TEXT NULL,
  PRIMARY KEY (customer_id, order_no)
) ENGINE=InnoDB;
INSERT INTO orders
SELECT 1 + (seq - 1) DIV 3, 1 + (seq - 1) % 3,
       ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
       (seq * 37 % 100000) / 100,
       TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq * 50 SECOND
                                      + INTERVAL seq % 1000 * 1000 MICROSECOND,
       IF(seq % 7 = 0, CONCAT('gift wrap, "fragile"', CHAR(10), 'deliver after ', seq % 24, 'h'),
          NULL)
FROM seq_1_to_500000;

-- No primary key and no unique NOT NULL key: storagetapper reads it as one chunk.
CREATE TABLE events (
  at DATETIME(6) NOT NULL,
  kind VARCHAR(20) NOT NULL,
  duration TIME NOT NULL,
  payload JSON NULL
) ENGINE=InnoDB;
INSERT INTO events
SELECT TIMESTAMP'2025-06-01 00:00:00' + INTERVAL seq * 1234567 MICROSECOND,
       ELT(1 + seq % 3, 'login', 'logout', 'purchase'),
       SEC_TO_TIME(CAST(seq AS SIGNED) * 37 % 7200 - 1800),
       IF(seq % 10 = 0, NULL,
          JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', 'ü'), 'ok', seq % 2 = 0))
FROM seq_1_to_20000;

-- Fresh statistics, so the row estimates of `plan` and the progress are close.
ANALYZE TABLE customers, orders, events;
SQL
echo "loaded in $(elapsed "$t0" "$(now)") s"

# ---------------------------------------------------------------------------------------------
step "storagetapper backup -m $MANIFEST --no-progress"
t0=$(now)
"$ST" backup -m "$MANIFEST" --no-progress
backup_secs=$(elapsed "$t0" "$(now)")

# ---------------------------------------------------------------------------------------------
step "storagetapper list -m $MANIFEST"
"$ST" list -m "$MANIFEST"

step "storagetapper status -m $MANIFEST"
"$ST" status -m "$MANIFEST"

mapfile -t dirs < <(find "$BACKUPS/demo" -mindepth 1 -maxdepth 1 -type d | sort)
[ "${#dirs[@]}" -eq 1 ] || die "expected exactly one backup under $BACKUPS/demo, found ${#dirs[@]}"
BACKUP=${dirs[0]}
META=$BACKUP/metadata.json
[ -s "$META" ] || die "$META is missing: the backup is not complete"

step "Files in $BACKUPS (sizes in bytes; long runs of chunk files shortened)"
find "$BACKUPS" -mindepth 1 -printf '%P\t%y\t%s\n' | LC_ALL=C sort | awk -F'\t' '
    { path[NR] = $1; type[NR] = $2; size[NR] = $3
      n = split($1, part, "/"); name[NR] = part[n]; depth[NR] = n - 1
      parent[NR] = substr($1, 1, length($1) - length(part[n]))
      if ($2 == "f" && part[n] ~ /^[0-9][0-9][0-9][0-9][0-9]\./) { chunks[parent[NR]]++; no[NR] = chunks[parent[NR]] } }
    END {
      for (i = 1; i <= NR; i++) {
        ind = sprintf("%" (depth[i] * 4) "s", "")
        if (type[i] == "d") { printf "%s%s/\n", ind, name[i]; continue }
        if (no[i]) {
          total = chunks[parent[i]]
          if (no[i] > 3 && no[i] <= total - 2) {
            if (no[i] == 4) printf "%s… %d more chunk files\n", ind, total - 5
            continue
          }
        }
        printf "%s%-24s %12d\n", ind, name[i], size[i]
      }
    }'

step "A sample row of each table (first line of chunk 00000)"
for f in "$BACKUP"/*/00000.*; do
    table=$(basename "$(dirname "$f")")
    printf '%s\n    %s\n' "$table" "$(zstd -dcq "$f" | head -n 1)"
done

# ---------------------------------------------------------------------------------------------
step "Verifying: decode every chunk, compare with metadata.json and the source"
# metadata.json is read with the server's JSON_TABLE, so the demo needs no jq.
meta_sql=$(<"$META")
meta_sql=${meta_sql//\\/\\\\}
meta_sql=${meta_sql//\'/\'\'}
tables_tsv=$(printf "SELECT m.s, m.t, m.r, m.b, COALESCE(m.w, '') FROM JSON_TABLE('%s', '\$.tables[*]' COLUMNS (s VARCHAR(64) PATH '\$.schema', t VARCHAR(64) PATH '\$.table', w TEXT PATH '\$.where', r BIGINT PATH '\$.rows', b BIGINT PATH '\$.bytes')) m" "$meta_sql" | sql -N -B -r)
chunks_tsv=$(printf "SELECT CONCAT(m.s, '.', m.t), m.f, m.r, m.h FROM JSON_TABLE('%s', '\$.tables[*]' COLUMNS (s VARCHAR(64) PATH '\$.schema', t VARCHAR(64) PATH '\$.table', NESTED PATH '\$.chunks[*]' COLUMNS (f VARCHAR(255) PATH '\$.file', r BIGINT PATH '\$.rows', h CHAR(64) PATH '\$.sha256'))) m" "$meta_sql" | sql -N -B -r)
[ -n "$tables_tsv" ] || die "metadata.json lists no tables"

t0=$(now)
problems=0
declare -A decoded_rows decoded_bytes chunk_count
while IFS=$'\t' read -r table file rows sha; do
    path=$BACKUP/$file
    if [ ! -f "$path" ]; then
        echo "MISSING  $file (listed in metadata.json)"
        problems=$((problems + 1))
        continue
    fi
    actual_sha=$(sha256sum "$path" | cut -d' ' -f1)
    if [ "$actual_sha" != "$sha" ]; then
        echo "MISMATCH $file: sha256 $actual_sha, metadata.json says $sha"
        problems=$((problems + 1))
    fi
    read -r lines bytes < <(zstd -dcq "$path" | wc -lc)
    if [ "$lines" != "$rows" ]; then
        echo "MISMATCH $file: $lines lines, metadata.json says $rows rows"
        problems=$((problems + 1))
    fi
    decoded_rows[$table]=$(( ${decoded_rows[$table]:-0} + lines ))
    decoded_bytes[$table]=$(( ${decoded_bytes[$table]:-0} + bytes ))
    chunk_count[$table]=$(( ${chunk_count[$table]:-0} + 1 ))
done <<<"$chunks_tsv"
n_chunks=$(grep -c . <<<"$chunks_tsv" || true)
echo "$n_chunks chunk files decoded; sha256 and line counts checked against metadata.json"

report=()
total_src=0 total_bak=0 total_bytes=0 total_json=0
# `where` comes last: read keeps an empty last field (tabs are IFS whitespace, so an empty field
# in the middle would vanish) and a condition holding a tab stays whole.
while IFS=$'\t' read -r schema table meta_rows meta_bytes where; do
    name=$schema.$table
    count_sql="SELECT COUNT(*) FROM \`${schema//\`/\`\`}\`.\`${table//\`/\`\`}\`"
    [ -z "$where" ] || count_sql+=" WHERE ($where)"
    src=$(sql -N -B -e "$count_sql")
    bak=${decoded_rows[$name]:-0}
    # Chunk files on disk that metadata.json does not list would be rows counted nowhere.
    on_disk=$(find "$BACKUP/$name" -maxdepth 1 -name '[0-9][0-9][0-9][0-9][0-9].*' -type f | wc -l)
    result=OK
    if [ "$src" != "$bak" ] || [ "$meta_rows" != "$bak" ] || [ "$on_disk" != "${chunk_count[$name]:-0}" ]; then
        result=MISMATCH
        problems=$((problems + 1))
    fi
    [ -z "$where" ] || result=$(printf '%-8s (where %s)' "$result" "$where")
    report+=("$(printf '%-16s %12s %12s %7s %12s %12s  %s' "$name" "$src" "$bak" \
        "${chunk_count[$name]:-0}" "$meta_bytes" "${decoded_bytes[$name]:-0}" "$result")")
    total_src=$((total_src + src))
    total_bak=$((total_bak + bak))
    total_bytes=$((total_bytes + meta_bytes))
    total_json=$((total_json + ${decoded_bytes[$name]:-0}))
done <<<"$tables_tsv"
verify_secs=$(elapsed "$t0" "$(now)")

# ---------------------------------------------------------------------------------------------
RESTORE_DB=demo_restored
TARGET=mysql://root@127.0.0.1:$PORT/$RESTORE_DB
step "Restore drill: storagetapper restore -m $MANIFEST --target $TARGET --no-progress"
t0=$(now)
"$ST" restore -m "$MANIFEST" --target "$TARGET" --no-progress
restore_secs=$(elapsed "$t0" "$(now)")

step "Comparing $RESTORE_DB with the source"
# The backed-up columns of each table, in order, from metadata.json.
columns_tsv=$(printf "SELECT CONCAT(m.s, '.', m.t), GROUP_CONCAT(m.c ORDER BY m.n SEPARATOR ',') FROM JSON_TABLE('%s', '\$.tables[*]' COLUMNS (s VARCHAR(64) PATH '\$.schema', t VARCHAR(64) PATH '\$.table', NESTED PATH '\$.columns[*]' COLUMNS (n FOR ORDINALITY, c VARCHAR(64) PATH '\$'))) m GROUP BY m.s, m.t" "$meta_sql" | sql -N -B -r)
declare -A backed_up_columns
while IFS=$'\t' read -r name cols; do
    backed_up_columns[$name]=$cols
done <<<"$columns_tsv"
qi() { printf '`%s`' "${1//\`/\`\`}"; }
t0=$(now)
restore_report=()
restricted=()
while IFS=$'\t' read -r schema table meta_rows meta_bytes where; do
    name=$schema.$table
    src_table="$(qi "$schema").$(qi "$table")"
    dst_table="$(qi "$RESTORE_DB").$(qi "$table")"
    all_cols=$(sql -N -B -e "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION SEPARATOR ',') FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '${schema//\'/\'\'}' AND TABLE_NAME = '${table//\'/\'\'}'")
    if [ -z "$where" ] && [ "$all_cols" = "${backed_up_columns[$name]:-}" ]; then
        # The whole table was backed up: the restored copy must have the same checksum.
        how="CHECKSUM TABLE"
        src=$(sql -N -B -e "CHECKSUM TABLE $src_table" | cut -f2) || src=ERROR
        dst=$(sql -N -B -e "CHECKSUM TABLE $dst_table" | cut -f2) || dst=ERROR
    else
        # Restricted by the manifest: the restored table holds the filtered rows and, in the
        # other columns, their defaults. Compare the row count with the filtered source count,
        # and a CRC32 sum over the backed-up columns (QUOTE keeps NULL apart from 'NULL').
        IFS=, read -r -a cols <<<"${backed_up_columns[$name]:-}"
        crc="COALESCE(SUM(CRC32(CONCAT_WS(',',"
        for i in "${!cols[@]}"; do
            [ "$i" -eq 0 ] || crc+=","
            crc+="QUOTE($(qi "${cols[$i]}"))"
        done
        crc+="))), 0)"
        IFS=, read -r -a source_cols <<<"$all_cols"
        how="rows, crc32 of ${#cols[@]}/${#source_cols[@]} columns"
        restricted+=("$name")
        filter=""
        [ -z "$where" ] || filter=" WHERE ($where)"
        src=$(sql -N -B -e "SELECT CONCAT(COUNT(*), ' rows, crc ', $crc) FROM $src_table$filter") || src=ERROR
        dst=$(sql -N -B -e "SELECT CONCAT(COUNT(*), ' rows, crc ', $crc) FROM $dst_table") || dst=ERROR
    fi
    result=OK
    if [ -z "$src" ] || [ "$src" = ERROR ] || [ "$src" = NULL ] || [ "$src" != "$dst" ]; then
        result=MISMATCH
        problems=$((problems + 1))
    fi
    [ -z "$where" ] || result=$(printf '%-8s (where %s)' "$result" "$where")
    restore_report+=("$(printf '%-16s %-28s %33s %33s  %s' "$name" "$how" "$src" "$dst" "$result")")
done <<<"$tables_tsv"
compare_secs=$(elapsed "$t0" "$(now)")

step "Report ($BACKUP)"
printf '%-16s %12s %12s %7s %12s %12s  %s\n' table "source rows" "backup rows" chunks "zstd bytes" "json bytes" result
printf '%s\n' "${report[@]}"
printf '%-16s %12s %12s %7s %12s %12s\n' total "$total_src" "$total_bak" "" "$total_bytes" "$total_json"
awk -v s="$backup_secs" -v r="$total_bak" -v v="$verify_secs" -v z="$total_bytes" -v j="$total_json" 'BEGIN {
    printf "backup %.2f s (%.0f rows/s, wall clock incl. start-up); verification %.2f s; zstd ratio %.1fx\n",
        s, (s > 0 ? r / s : 0), v, (z > 0 ? j / z : 0) }'

printf '\nrestore drill: backup -> %s, compared with the source\n' "$RESTORE_DB"
printf '%-16s %-28s %33s %33s  %s\n' table compared source restored result
printf '%s\n' "${restore_report[@]}"
for name in "${restricted[@]}"; do
    printf '%s: restricted by the manifest (columns/where), so not CHECKSUM TABLE: its row count\n' "$name"
    printf '    is compared with the filtered source count, plus a CRC32 sum over the backed-up columns\n'
done
awk -v s="$restore_secs" -v r="$total_bak" -v c="$compare_secs" 'BEGIN {
    printf "restore %.2f s (%d rows, %.0f rows/s, wall clock incl. start-up); comparison %.2f s\n",
        s, r, (s > 0 ? r / s : 0), c }'

if [ "$problems" -ne 0 ]; then
    echo "demo: $problems mismatch(es)" >&2
    exit 1
fi
echo "demo: all tables OK"
