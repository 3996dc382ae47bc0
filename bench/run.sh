#!/usr/bin/env bash
# `make bench`: storagetapper against mydumper, mariadb-dump and a plain client read, on the
# same data, the same private server and the same machine, in one run; writes bench/results.md.
#
#   1. build the release binary; install mydumper/myloader (and GNU time) from Debian if missing
#   2. start a private MariaDB (scripts/sandbox.sh) in target/bench/mariadb on a free port
#      (stopped again on exit); create database `bench`: `wide` (ROWS rows, ~180 bytes/row,
#      nine columns of the usual types) and `narrow` (ROWS rows, three integers)
#   3. write one storagetapper manifest per variant to target/bench/ (2 threads, chunk_rows
#      100000) and a fresh age key for the encrypted one
#   4. REPS times, every tool in turn (so a load spike hits all tools, not one): each run is
#      timed with GNU time (wall, user, sys, peak RSS) plus the server's CPU from /proc, into a
#      fresh output directory (storagetapper's state file removed too: always a full backup)
#   5. medians per tool → bench/results.md (also printed)
#
#   (also: a binlog of ROWS row changes, decoded by \`storagetapper tail\` and \`mariadb-binlog -R -vv\`,
#   and streamed by \`storagetapper tail\` into Kafka: librdkafka's mock cluster, in memory, in
#   its own process (examples/kafka_mock.rs), each repetition into new topics)
#
#   6. memory: the table grown to RSS_FACTOR × ROWS rows, each storagetapper backup once more
#      (peak RSS at both sizes); bench/results.png drawn by bench/chart.py (matplotlib)
#   7. PROFILE=1: each storagetapper backup under `perf record -a -g` → bench/profiles.md
#
# Environment: ROWS (default 1000000), REPS (default 3), RSS_FACTOR (default 4; 0 or 1 skips
# the memory runs), BENCH_TABLE (wide or narrow; default
# wide), BENCH_PORT (default: the first free port from 34306), BUILD=0 to skip `cargo build`,
# KEEP=1 to keep the server's data directory and the backups in target/bench (≈ 2 GB at 1M rows).
# All tools connect over TCP to 127.0.0.1 (storagetapper's manifest URL has no socket form).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${ROWS:-1000000}
REPS=${REPS:-3}
TABLE=${BENCH_TABLE:-wide}
THREADS=2
CHUNK_ROWS=100000
BENCH=target/bench
SANDBOX=$BENCH/mariadb
OUT=$BENCH/out
LOGS=$BENCH/logs
RUNS=$BENCH/runs.tsv
KEY=$BENCH/bench.key
RESULTS=bench/results.md
CHART=bench/results.png
PROFILES=bench/profiles.md
RSS_FACTOR=${RSS_FACTOR:-4}
ST=target/release/storagetapper
TIME_FMT='%e %U %S %M' # wall s, user s, sys s, peak RSS KiB

[[ $ROWS =~ ^[1-9][0-9]*$ ]] || { echo "bench: ROWS must be a positive integer" >&2; exit 2; }
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "bench: REPS must be a positive integer" >&2; exit 2; }
[[ $RSS_FACTOR =~ ^[0-9]+$ ]] || { echo "bench: RSS_FACTOR must be a whole number" >&2; exit 2; }
[[ $TABLE =~ ^(wide|narrow)$ ]] || { echo "bench: BENCH_TABLE must be wide or narrow" >&2; exit 2; }

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "bench: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Setup

install_tools() {
    local need=() sudo=
    command -v mydumper >/dev/null 2>&1 && command -v myloader >/dev/null 2>&1 || need+=(mydumper)
    [ -x /usr/bin/time ] || need+=(time)
    for t in mariadb mariadb-dump zstd; do
        command -v "$t" >/dev/null 2>&1 || die "\`$t\` is needed (\`make deps\` installs it)"
    done
    [ ${#need[@]} -eq 0 ] && return
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "     installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq "${need[@]}" >/dev/null ||
        { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "${need[@]}" >/dev/null; }
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p
    for ((p = 34306; p < 34406; p++)); do
        port_in_use "$p" || { echo "$p"; return; }
    done
    die "no free port in 34306-34405 (set BENCH_PORT)"
}

sql() { mariadb --no-defaults -uroot -S "$SANDBOX/mysqld.sock" "$@"; }

# librdkafka's mock cluster in its own process (stopped by cleanup); sets KAFKA.
start_kafka() {
    local i
    : >"$BENCH/kafka.addr" # not an earlier run's address (the redirection below is not instant)
    target/release/examples/kafka_mock >"$BENCH/kafka.addr" &
    KAFKA_PID=$!
    for ((i = 0; i < 50; i++)); do
        KAFKA=$(head -n 1 "$BENCH/kafka.addr")
        [ -z "$KAFKA" ] || return 0
        sleep 0.1
    done
    die "the mock Kafka broker did not start"
}

# Stop the server; after a successful run also delete the data directory and the backups
# (≈ 2 GB at 1M rows) unless KEEP=1.
cleanup() {
    local rc=$?
    trap - EXIT
    [ -z "${KAFKA_PID:-}" ] || kill "$KAFKA_PID" 2>/dev/null || true
    scripts/sandbox.sh stop "$SANDBOX" >/dev/null 2>&1 || true
    [ "$rc" -ne 0 ] || [ "${KEEP:-0}" = 1 ] || rm -rf "$SANDBOX" "$OUT"
    exit "$rc"
}

start_server() {
    scripts/sandbox.sh stop "$SANDBOX" >/dev/null 2>&1 || true
    rm -rf "$SANDBOX"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # sandbox.sh takes no server options, so the server runs with its defaults
    # (innodb_buffer_pool_size = 128 MiB): the table does not fit in the buffer pool.
    scripts/sandbox.sh start "$SANDBOX" "$PORT" >/dev/null
    SERVER_PID=$(cat "$SANDBOX/mysqld.pid")
}

# wide_rows FROM TO: the INSERT of rows FROM..TO of bench.wide (deterministic in the id).
wide_rows() {
    cat <<SQL
INSERT INTO bench.wide
SELECT seq,
       seq * 7919 % 1000003,
       MD5(seq),
       (seq * 104729 % 100000000) / 100 - 250000,
       TIMESTAMP'2020-01-01 00:00:00' + INTERVAL seq * 37 SECOND,
       SQRT(seq) * 1000 / 7,
       CONCAT(ELT(1 + seq % 6, 'Zoë', 'José', 'Łukasz', 'Søren', 'Ana', 'Bob'), ' ',
              ELT(1 + seq DIV 6 % 5, 'Müller', 'García', 'O''Brien', 'Nguyễn', 'Smith'),
              ' #', seq, ' ', REPEAT('x', seq % 50)),
       seq * 2654435761 % 4294967296,
       IF(seq % 3 = 0, CONCAT('note ', seq, ': ', REPEAT('lorem ipsum dolor ', 1 + seq % 8)), NULL)
FROM seq_$1_to_$2;
SQL
}

# narrow_rows FROM TO: the INSERT of rows FROM..TO of bench.narrow.
narrow_rows() { echo "INSERT INTO bench.narrow SELECT seq, seq % 1000, seq * 7 % 100003 FROM seq_$1_to_$2;"; }

load_data() {
    sql >/dev/null <<SQL
-- Bulk load outside the binlog; the binlog stays on for the backups' positions.
SET SESSION sql_log_bin = 0;
CREATE DATABASE bench CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE bench;
-- wide: ~181 bytes/row of data_length (name ~45 bytes, note on every third row, ~93 bytes).
CREATE TABLE wide (
  id BIGINT NOT NULL PRIMARY KEY,
  account INT NOT NULL,
  hash VARCHAR(64) NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  created DATETIME NOT NULL,
  score DOUBLE NOT NULL,
  name VARCHAR(100) NOT NULL,
  flags INT UNSIGNED NOT NULL,
  note TEXT NULL
) ENGINE=InnoDB;
$(wide_rows 1 "$ROWS")
CREATE TABLE narrow (
  id BIGINT NOT NULL PRIMARY KEY,
  a INT NOT NULL,
  b INT NOT NULL
) ENGINE=InnoDB;
$(narrow_rows 1 "$ROWS")
ANALYZE TABLE wide, narrow;
SQL
    DATA_LENGTH=$(sql -N -B -e "SELECT data_length FROM information_schema.TABLES
                                WHERE table_schema = 'bench' AND table_name = '$TABLE'")
    # Warm up: one untimed read, so the first measured tool does not pay for a cold cache.
    sql -N -B --quick -e "SELECT * FROM bench.$TABLE" >/dev/null
}

# A binlog of ROWS row changes for the tail comparison: the rows of bench.$TABLE inserted
# again into bench.changes, 10000 rows per transaction, between TAIL_FROM and TAIL_TO.
write_binlog() {
    local i
    sql -e "CREATE TABLE bench.changes LIKE bench.$TABLE; FLUSH BINARY LOGS"
    TAIL_FROM=$(sql -N -B -e "SHOW MASTER STATUS" | awk '{ print $1 ":" $2 }')
    for ((i = 0; i < ROWS; i += 10000)); do
        echo "INSERT INTO bench.changes SELECT * FROM bench.$TABLE WHERE id > $i AND id <= $((i + 10000));"
    done | sql
    TAIL_TO=$(sql -N -B -e "SHOW MASTER STATUS" | awk '{ print $1 ":" $2 }')
    BINLOG_BYTES=$(sql -N -B -e "SHOW BINARY LOGS" |
        awk -v f="${TAIL_FROM%%:*}" -v p="${TAIL_FROM##*:}" -v t="${TAIL_TO%%:*}" -v e="${TAIL_TO##*:}" '
            $1 >= f && $1 <= t { b += ($1 == t ? e : $2) - ($1 == f ? p : 0) } END { print b }')
}

# write_manifest ID FORMAT COMPRESSION [RECIPIENT]: $BENCH/ID.toml backing up bench.$TABLE to
# $OUT/ID with its own state file $BENCH/ID.db (paths relative to the manifest's directory).
write_manifest() {
    local id=$1 format=$2 compression=$3 recipient=${4:-} table=${5:-$TABLE}
    {
        echo "name = \"$id\""
        echo "[source]"
        echo "url = \"mysql://root@127.0.0.1:$PORT\""
        echo "[state]"
        echo "url = \"sqlite://$id.db\""
        echo "[destination]"
        if [ "$id" = st-kafka ]; then
            echo "url = \"kafka://$KAFKA\""
            echo "topic = \"{name}.rep$REP.{table}\""
        else
            echo "url = \"file://out/$id\""
        fi
        echo "format = \"$format\""
        echo "compression = \"$compression\""
        [ "$id" != st-json-z1 ] || echo "compression_level = 1"
        [ -z "$recipient" ] || echo "encrypt_to = [\"$recipient\"]"
        echo "[snapshot]"
        echo "threads = $THREADS"
        echo "chunk_rows = $CHUNK_ROWS"
        echo "[[tables]]"
        echo "schema = \"bench\""
        echo "table = \"$table\""
    } >"$BENCH/$id.toml"
}

write_manifests() {
    local recipient
    rm -f "$KEY" # keygen never overwrites
    recipient=$("$ST" -q keygen -o "$KEY" 2>/dev/null)
    [[ $recipient == age1* ]] || die "storagetapper keygen printed no recipient"
    write_manifest st-sql sql none
    write_manifest st-json json zstd
    write_manifest st-json-z1 json zstd
    write_manifest st-avro avro zstd
    write_manifest st-parquet parquet zstd
    write_manifest st-json-age json zstd "$recipient"
    write_manifest st-tail json zstd "" changes
    REP=1 write_manifest st-kafka json zstd "" changes
}

# ---------------------------------------------------------------------------------------------
# The tools: ORDER is the order within one repetition; KIND is read, backup or restore.

declare -a ORDER=()
declare -A LABEL=() KIND=() CMD=()

tool() { ORDER+=("$1"); KIND[$1]=$2; LABEL[$1]=$3; CMD[$1]=$4; }

define_tools() {
    local tcp="-h 127.0.0.1 -P $PORT -u root" st="$ST -q --no-progress"
    tool read read "mariadb --quick (raw read)" \
        "mariadb --no-defaults $tcp --quick -e 'SELECT * FROM bench.$TABLE' > /dev/null"
    tool mydumper backup "mydumper -t 2 -r 100000" \
        "mydumper $tcp -t $THREADS -r $CHUNK_ROWS -B bench -T $TABLE -o $OUT/mydumper"
    tool mydumper-gz backup "mydumper -t 2 -r 100000 -c" \
        "mydumper $tcp -t $THREADS -r $CHUNK_ROWS -c -B bench -T $TABLE -o $OUT/mydumper-gz"
    tool mariadb-dump backup "mariadb-dump" \
        "mariadb-dump --no-defaults $tcp --single-transaction --quick bench $TABLE > $OUT/mariadb-dump/$TABLE.sql"
    tool mariadb-dump-zstd backup "mariadb-dump \| zstd" \
        "mariadb-dump --no-defaults $tcp --single-transaction --quick bench $TABLE | zstd -q > $OUT/mariadb-dump-zstd/$TABLE.sql.zst"
    tool st-sql backup "storagetapper sql" "$st backup -m $BENCH/st-sql.toml"
    tool st-json backup "storagetapper json+zstd" "$st backup -m $BENCH/st-json.toml"
    tool st-json-z1 backup "storagetapper json+zstd level 1" "$st backup -m $BENCH/st-json-z1.toml"
    tool st-avro backup "storagetapper avro+zstd" "$st backup -m $BENCH/st-avro.toml"
    tool st-parquet backup "storagetapper parquet (zstd inside)" "$st backup -m $BENCH/st-parquet.toml"
    tool st-json-age backup "storagetapper json+zstd+age" "$st backup -m $BENCH/st-json-age.toml"
    # Restores load this repetition's st-sql and mydumper (raw) backups.
    tool restore-st restore "storagetapper restore (sql)" \
        "$st restore -m $BENCH/st-sql.toml --target mysql://root@127.0.0.1:$PORT/bench_st --threads $THREADS --replace"
    tool restore-st-nobinlog restore "storagetapper restore (sql) --no-binlog" \
        "$st restore -m $BENCH/st-sql.toml --target mysql://root@127.0.0.1:$PORT/bench_st --threads $THREADS --replace --no-binlog"
    tool myloader restore "myloader -t 2 -o (mydumper raw)" \
        "myloader $tcp -t $THREADS -o -d $OUT/mydumper -B bench_ml"
    # Decoding the pre-written binlog of ROWS row changes (bench.changes).
    local to_last=
    [ "${TAIL_FROM%%:*}" = "${TAIL_TO%%:*}" ] || to_last=--to-last-log
    tool mariadb-binlog tail "mariadb-binlog -R -vv" \
        "mariadb-binlog --no-defaults -R $tcp -vv --start-position=${TAIL_FROM##*:} --stop-position=${TAIL_TO##*:} $to_last ${TAIL_FROM%%:*} > /dev/null"
    tool st-tail tail "storagetapper tail (json+zstd)" \
        "$st tail -m $BENCH/st-tail.toml --from $TAIL_FROM --until $TAIL_TO"
    tool st-kafka tail "storagetapper tail → Kafka (json, zstd batches; mock broker)" \
        "$st tail -m $BENCH/st-kafka.toml --from $TAIL_FROM --until $TAIL_TO"
}

# The database a restore tool loads into.
restore_db() { case $1 in myloader) echo bench_ml ;; *) echo bench_st ;; esac; }

# Fresh output directory and state for a backup, empty database for a restore; new topics
# for the Kafka stream.
prepare() {
    local id=$1
    [ "$id" != st-kafka ] || REP=$2 write_manifest st-kafka json zstd "" changes
    case ${KIND[$id]} in
    backup | tail)
        rm -rf "${OUT:?}/$id" "$BENCH/$id.db" "$BENCH/$id.db-wal" "$BENCH/$id.db-shm" "$BENCH/$id.db-journal"
        mkdir -p "$OUT/$id"
        ;;
    restore)
        sql -e "DROP DATABASE IF EXISTS bench_st; DROP DATABASE IF EXISTS bench_ml;
                CREATE DATABASE $(restore_db "$id")"
        ;;
    esac
    # Earlier runs' dirty pages are written now, not during the timed run.
    sync
}

# A run that exits 0 but did not do its job must not count.
check_run() {
    local id=$1 n
    case $id in
    st-tail | st-kafka) ;;
    st-*)
        n=$(find "$OUT/$id" -name metadata.json | wc -l)
        [ "$n" -eq 1 ] || die "$id: expected one complete backup (metadata.json), found $n"
        ;;
    mydumper | mydumper-gz)
        n=$(find "$OUT/$id" -name "bench.$TABLE.*" | wc -l)
        [ "$n" -ge 1 ] || die "$id: no data files in $OUT/$id"
        ;;
    esac
    if [ "$id" = st-tail ] || [ "$id" = st-kafka ]; then
        grep -q "reached --until: $ROWS events" "$LOGS/$id.$2.log" ||
            die "$id: expected $ROWS change events (log: $LOGS/$id.$2.log)"
    fi
    if [ "${KIND[$id]}" = restore ]; then
        n=$(sql -N -B -e "SELECT COUNT(*) FROM $(restore_db "$id").$TABLE")
        [ "$n" -eq "$ROWS" ] || die "$id: restored $n rows, expected $ROWS"
    fi
}

server_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }

# measure ID REP: one timed run; appends a line to $RUNS:
# rep id wall user sys rss_kib server_cpu_s output_bytes
measure() {
    local id=$1 rep=$2 log=$LOGS/$1.$2.log tfile=$BENCH/time.out
    local c0 c1 wall user sys rss bytes=-
    prepare "$id" "$rep"
    c0=$(server_cpu_ticks)
    if ! /usr/bin/time -f "$TIME_FMT" -o "$tfile" bash -o pipefail -c "${CMD[$id]}" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "$id failed (log: $log): ${CMD[$id]}"
    fi
    c1=$(server_cpu_ticks)
    read -r wall user sys rss < <(tail -n 1 "$tfile")
    check_run "$id" "$rep"
    case $id in st-kafka) ;; st-* | mydumper* | mariadb-dump*) bytes=$(du -sb "$OUT/$id" | cut -f 1) ;; esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$id" "$wall" "$user" "$sys" "$rss" \
        "$(awk -v t=$((c1 - c0)) -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')" "$bytes" >>"$RUNS"
    printf '     %-42s %6.2f s\n' "${LABEL[$id]//\\/}" "$wall"
}

# Memory: bench.$TABLE grown to RSS_FACTOR × ROWS rows, each storagetapper backup run once
# more; its peak RSS goes next to the median at ROWS (bounded memory: the same within noise).
BACKUPS=(st-sql st-json st-json-z1 st-avro st-parquet st-json-age)
memory_runs() {
    BIG_ROWS=$((ROWS * RSS_FACTOR))
    step "Memory: bench.$TABLE grown to $BIG_ROWS rows; one more run of each storagetapper backup"
    {
        echo "SET SESSION sql_log_bin = 0; USE bench;"
        "${TABLE}_rows" $((ROWS + 1)) "$BIG_ROWS"
    } | sql
    : >"$BENCH/runs-big.tsv"
    local id
    for id in "${BACKUPS[@]}"; do
        RUNS=$BENCH/runs-big.tsv measure "$id" big
    done
    rm -rf "${OUT:?}"/st-*
}

# PROFILE=1: each storagetapper backup once more under `perf record -a -g` (the whole machine:
# the server's share is part of the answer) → bench/profiles.md: CPU by process, then the
# hottest functions. Needs a working `perf` (Debian's linux-perf); skipped with a message if not.
profile_runs() {
    local id data top
    if ! perf stat -e task-clock -o /dev/null true 2>/dev/null; then
        echo "bench: PROFILE=1 but \`perf\` does not work here: no profiles" >&2
        return
    fi
    step "Profiles (perf record -a -g) → $PROFILES"
    {
        echo "# Where the time goes: storagetapper backups under perf"
        echo
        echo "Written by \`bench/run.sh\` with PROFILE=1 on $(date -u '+%Y-%m-%d %H:%M UTC'), commit"
        echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown); \`bench.$TABLE\`, $ROWS rows, $(nproc) CPUs."
        echo "Each backup ran once under \`perf record -F 999 -a -g\` (the whole machine, so the"
        echo "server's share shows); percentages are of all samples on all CPUs, idle (swapper) left out."
        for id in "${BACKUPS[@]}"; do
            case $id in st-json-age | st-json-z1) continue ;; esac
            data=$BENCH/perf.$id.data
            prepare "$id" profile
            perf record -q -F 999 -a -g -o "$data" -- bash -c "${CMD[$id]}" >"$LOGS/$id.profile.log" 2>&1 ||
                die "$id failed under perf (log: $LOGS/$id.profile.log)"
            echo
            echo "## ${LABEL[$id]}"
            echo
            echo "CPU by process (comm):"
            echo
            echo '```'
            perf report -i "$data" --no-children --sort comm --stdio -g none --percent-limit 1 2>/dev/null |
                grep -v -e '^#' -e '^$' | grep -v -w swapper | head -n 8
            echo '```'
            echo
            echo "Hottest functions (all processes, ≥ 1.5 %):"
            echo
            echo '```'
            perf report -i "$data" --no-children --sort comm,dso,sym --stdio -g none --percent-limit 1.5 2>/dev/null |
                grep -v -e '^#' -e '^$' | grep -v -w swapper | sed 's/ *$//' | head -n 25
            echo '```'
        done
    } >"$PROFILES"
    rm -f "$BENCH"/perf.*.data
}

# ---------------------------------------------------------------------------------------------
# Report

# $BENCH/medians.tsv and $BENCH/rss.tsv for bench/chart.py; the chart next to results.md.
write_chart() {
    local id py=${BENCH_PYTHON:-$ROOT/target/pyenv/bin/python}
    for id in "${ORDER[@]}"; do
        [ "$id" != st-kafka ] || continue # another kind of work (a broker on the same cores)
        printf '%s\t%s\t%s\t%s\t%s\n' "${KIND[$id]}" "${LABEL[$id]//\\/}" "$(median "$id" '$3')" \
            "$(awk -v w="$(median "$id" '$3')" -v r="$ROWS" 'BEGIN { printf "%d", r / w }')" \
            "$(median "$id" '$6 / 1024')"
    done >"$BENCH/medians.tsv"
    : >"$BENCH/rss.tsv"
    if [ -n "${BIG_ROWS:-}" ]; then
        for id in "${BACKUPS[@]}"; do
            printf '%s\t%s\t%s\n' "${LABEL[$id]#storagetapper }" "$ROWS" "$(median "$id" '$6 * 1024 / 1e6')"
            printf '%s\t%s\t%s\n' "${LABEL[$id]#storagetapper }" "$BIG_ROWS" "$(RUNS=$BENCH/runs-big.tsv median "$id" '$6 * 1024 / 1e6')"
        done >"$BENCH/rss.tsv"
    fi
    if "$py" -c 'import matplotlib' 2>/dev/null; then
        "$py" bench/chart.py "$BENCH/medians.tsv" "$BENCH/rss.tsv" "$CHART" \
            "make bench ROWS=$ROWS REPS=$REPS (bench.$TABLE; $(nproc) CPUs; $(date -u '+%Y-%m-%d'))"
    else
        echo "bench: no matplotlib in $py (\`make bench\` installs it): $CHART not drawn" >&2
    fi
}

memory_table() {
    echo "| backup | peak RSS MB, $ROWS rows (median) | peak RSS MB, $BIG_ROWS rows | wall s, $BIG_ROWS rows | rows/s, $BIG_ROWS rows |"
    echo "|---|--:|--:|--:|--:|"
    local id
    for id in "${BACKUPS[@]}"; do
        awk -v l="${LABEL[$id]}" -v a="$(median "$id" '$6')" -v b="$(RUNS=$BENCH/runs-big.tsv median "$id" '$6')" \
            -v w="$(RUNS=$BENCH/runs-big.tsv median "$id" '$3')" -v r="$BIG_ROWS" \
            'BEGIN { printf "| %s | %.1f | %.1f | %.2f | %d |\n", l, a * 1024 / 1e6, b * 1024 / 1e6, w, r / w }'
    done
}

# median ID EXPR: the median over the tool's runs of an awk expression on a line of $RUNS
# (e.g. '$3', '$4 + $5').
median() {
    awk -F '\t' -v id="$1" '$2 == id { print '"$2"' }' "$RUNS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

summary_table() {
    local base_dump base_read id wall cpu rss srv bytes
    base_dump=$(median mydumper '$3')
    base_read=$(median read '$3')
    echo "| tool | wall s | rows/s | MB/s | CPU s (user+sys) | server CPU s | peak RSS MB | output bytes | wall ÷ mydumper | wall ÷ raw read |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for id in "${ORDER[@]}"; do
        wall=$(median "$id" '$3')
        cpu=$(median "$id" '$4 + $5')
        rss=$(median "$id" '$6')
        srv=$(median "$id" '$7')
        bytes=-
        case ${KIND[$id]} in backup | tail) [ "$id" = mariadb-binlog ] || [ "$id" = st-kafka ] || bytes=$(median "$id" '$8') ;; esac
        LABEL_TEXT=${LABEL[$id]} awk -v w="$wall" -v cpu="$cpu" -v rss="$rss" -v srv="$srv" \
            -v bytes="$bytes" -v rows="$ROWS" -v dl="$DATA_LENGTH" -v bd="$base_dump" -v br="$base_read" '
            BEGIN {
                label = ENVIRON["LABEL_TEXT"] # not -v: that would read the \| as an escape
                out = bytes == "-" ? "—" : sprintf("%d", bytes)
                printf "| %s | %.2f | %d | %.1f | %.2f | %.2f | %.1f | %s | %.2f | %.2f |\n",
                    label, w, rows / w, dl / 1e6 / w, cpu, srv, rss * 1024 / 1e6, out, w / bd, w / br
            }'
    done
}

runs_table() {
    echo "| rep | tool | wall s | user s | sys s | peak RSS KiB | server CPU s | output bytes |"
    echo "|--:|---|--:|--:|--:|--:|--:|--:|"
    awk -F '\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$RUNS"
}

write_results() {
    local mem cpu_model commit dirty server_version
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    cpu_model=$(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l)
    [ "$dirty" -eq 0 ] && dirty="" || dirty=" plus uncommitted changes to $dirty file(s) in src/ or Cargo.*"
    server_version=$(sql -N -B -e 'SELECT VERSION()')
    {
        echo "# Benchmark: storagetapper vs mydumper and mariadb-dump"
        echo
        echo "Written by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); command:"
        echo "\`make bench ROWS=$ROWS REPS=$REPS\`${BENCH_TABLE:+ with BENCH_TABLE=$TABLE}."
        echo
        echo "- Machine: $(nproc) CPUs ($cpu_model), $mem RAM, $(uname -sr); load average before"
        echo "  the runs $LOAD_BEFORE, after $(cut -d ' ' -f 1-3 /proc/loadavg)."
        echo "- Versions: MariaDB server $server_version; $(mariadb --version | sed 's/ *using.*//');"
        echo "  $(mydumper --version 2>&1 | head -n 1); $("$ST" --version) (commit $commit$dirty)."
        echo "- Server: a private \`mariadbd\` started by \`scripts/sandbox.sh\` with its defaults"
        echo "  (innodb_buffer_pool_size $(sql -N -B -e 'SELECT @@innodb_buffer_pool_size DIV 1048576') MiB, binlog on);"
        echo "  every tool connects over TCP to 127.0.0.1:$PORT, 2 threads/connections where it has a choice."
        echo "- Data: \`bench.$TABLE\`, $ROWS rows, data_length $DATA_LENGTH bytes"
        echo "  ($(awk -v d="$DATA_LENGTH" -v r="$ROWS" 'BEGIN { printf "%.0f", d / r }') bytes/row)."
        echo "- $REPS repetitions, the tools taking turns within each; every figure is the median of"
        echo "  the $REPS runs (all runs are listed at the end)."
        echo
        summary_table
        echo
        echo "![rows/s per tool and storagetapper's peak RSS](results.png)"
        echo
        echo "- wall: elapsed seconds; rows/s and MB/s: the table's rows and data_length (MB = 10⁶"
        echo "  bytes) divided by wall."
        echo "- CPU: user+sys of the tool and its children (GNU time); server CPU: user+sys of"
        echo "  \`mariadbd\` during the run, from /proc/PID/stat. peak RSS: the largest process of the run."
        echo "- output bytes: everything the run wrote to its output directory (\`du -sb\`: data"
        echo "  files plus schema and metadata files)."
        echo "- wall ÷ mydumper and ÷ raw read: this tool's median wall over that of"
        echo "  \`mydumper -t 2 -r 100000\` and of the plain client read (below 1 = faster)."
        echo "  Restores: storagetapper restore ÷ myloader = $(awk -v a="$(median restore-st '$3')" -v b="$(median myloader '$3')" 'BEGIN { printf "%.2f", a / b }'),"
        echo "  with \`--no-binlog\` $(awk -v a="$(median restore-st-nobinlog '$3')" -v b="$(median myloader '$3')" 'BEGIN { printf "%.2f", a / b }')"
        echo "  (myloader leaves its load out of the binlog unless given \`-e\`)."
        echo "- Tail: both decode the same pre-written binlog of $ROWS row changes (inserts into"
        echo "  \`bench.changes\`, 10000 rows per transaction, $BINLOG_BYTES binlog bytes, $TAIL_FROM to $TAIL_TO);"
        echo "  rows/s counts those row changes. storagetapper tail ÷ mariadb-binlog (wall) ="
        echo "  $(awk -v a="$(median st-tail '$3')" -v b="$(median mariadb-binlog '$3')" 'BEGIN { printf "%.2f", a / b }')."
        echo "  Into Kafka: the same changes as JSON events (zstd-compressed batches) to librdkafka's"
        echo "  mock cluster (one in-memory broker in its own process on the same 2 cores; topics"
        echo "  auto-created with 4 partitions), idempotent producer, acks=all, the position saved"
        echo "  after each flush about every second."
        echo "- Each backup goes to an empty directory (and storagetapper's state file is removed), so"
        echo "  every run is a full backup; restores load this repetition's backups into a freshly"
        echo "  created database (\`bench_st\`, \`bench_ml\`) and are checked by row count."
        echo
        if [ -n "${BIG_ROWS:-}" ]; then
            echo "## Memory: $ROWS vs $BIG_ROWS rows"
            echo
            echo "The same backups after \`bench.$TABLE\` was grown to $BIG_ROWS rows (one run each, after"
            echo "the repetitions above): bounded memory means the same peak RSS at both sizes."
            echo
            memory_table
            echo
        fi
        echo "## Commands"
        echo
        echo "Run from the repository root; manifests are in target/bench/ (e.g. st-json.toml:"
        echo "format json, compression zstd, threads $THREADS, chunk_rows $CHUNK_ROWS)."
        echo
        for id in "${ORDER[@]}"; do
            echo "- ${LABEL[$id]}: \`${CMD[$id]}\`"
        done
        echo
        echo "$BENCH/st-json.toml (the others differ in format, compression and encrypt_to):"
        echo
        echo '```toml'
        cat "$BENCH/st-json.toml"
        echo '```'
        echo
        echo "## All runs"
        echo
        runs_table
    } >"$RESULTS"
}

# ---------------------------------------------------------------------------------------------

main() {
    HZ=$(getconf CLK_TCK)
    if [ "${BUILD:-1}" != 0 ]; then
        step "cargo build --release"
        cargo build --release --bin storagetapper --example kafka_mock
    fi
    [ -x "$ST" ] || die "$ST is missing"
    step "Tools"
    install_tools
    PORT=${BENCH_PORT:-$(free_port)}
    step "Private MariaDB in $SANDBOX on 127.0.0.1:$PORT; bench.wide and bench.narrow, $ROWS rows each"
    mkdir -p "$BENCH"
    rm -rf "$OUT" "$LOGS"
    mkdir -p "$OUT" "$LOGS"
    start_server
    load_data
    echo "     bench.$TABLE: data_length $DATA_LENGTH bytes"
    write_binlog
    echo "     binlog of $ROWS row changes: $TAIL_FROM to $TAIL_TO ($BINLOG_BYTES bytes)"
    start_kafka
    write_manifests
    define_tools
    : >"$RUNS"
    LOAD_BEFORE=$(cut -d ' ' -f 1-3 /proc/loadavg)
    local rep id
    for ((rep = 1; rep <= REPS; rep++)); do
        step "Repetition $rep of $REPS"
        for id in "${ORDER[@]}"; do
            measure "$id" "$rep"
        done
    done
    sql -e "DROP DATABASE IF EXISTS bench_st; DROP DATABASE IF EXISTS bench_ml"
    [ "${PROFILE:-0}" = 0 ] || profile_runs
    [ "$RSS_FACTOR" -le 1 ] || memory_runs
    write_results
    write_chart
    step "Medians ($RESULTS)"
    summary_table
}

main "$@"
