#!/usr/bin/env bash
# `make demo`: the restore drill an operator would put in CI, printed as a short report.
#
#   1. start a sandbox MariaDB in target/demo/mariadb on 127.0.0.1:33306 (stopped again on exit)
#      and create database `demo`: customers (200k rows), orders (500k, composite key),
#      events (20k, no primary key: one chunk), generated with the SEQUENCE engine
#   2. storagetapper keygen -o target/demo/drill.key: a fresh age key for every run; write
#      target/demo/drill.toml = manifests/drill.toml with its recipient in `encrypt_to`
#   3. storagetapper backup: Avro, zstd, encrypted to that key
#   4. the files are sealed: only metadata.json is plain (and holds no chunk keys), every other
#      file is an age file; verify without a key, or with another key, exits 2
#   5. the standard `age` CLI opens a chunk with the key: age -d | zstd -d gives the Avro magic
#   6. storagetapper verify --identity: size, sha256, decryption, decoding and row count of
#      every chunk (exit 0)
#   7. storagetapper restore --identity into a new database `demo_restored`, then CHECKSUM
#      TABLE and row count of every table against the source (manifests/drill.toml backs up
#      whole tables only, so every table must match exactly)
#
# Every check is a line of the final report. Exit status: 0 every check passed, 1 a check
# failed (a mismatch, a bad file, a failed restore), 2 the demo itself could not run.
set -euo pipefail

cd "$(dirname "$0")/.."
ST=${STORAGETAPPER:-./target/debug/storagetapper}
TEMPLATE=manifests/drill.toml
DEMO=target/demo
SANDBOX=$DEMO/mariadb
PORT=33306
MANIFEST=$DEMO/drill.toml
KEY=$DEMO/drill.key
WRONG_KEY=$DEMO/wrong.key
BACKUPS=$DEMO/drill-backups # = [destination] url of the manifest
STATE=$DEMO/drill-state.db  # = [state] url of the manifest
RESTORE_DB=demo_restored
TARGET=mysql://root@127.0.0.1:$PORT/$RESTORE_DB

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

problems=0
checks=()
# check NAME OK|FAIL DETAIL: one line of the report; a failure makes the demo exit 1.
check() {
    checks+=("$(printf '%-4s %-22s %s' "$2" "$1" "$3")")
    printf '     %-4s %s\n' "$2" "$3"
    [ "$2" = OK ] || problems=$((problems + 1))
}

[ -x "$ST" ] || die "$ST is missing: run \`cargo build\` (or \`make demo\`) first"
for tool in zstd age od awk; do
    command -v "$tool" >/dev/null 2>&1 || die "\`$tool\` is needed (\`make deps\` installs zstd and age)"
done
MARIADB=$(command -v mariadb || true)
[ -n "$MARIADB" ] || die "the \`mariadb\` client is needed (\`make deps\` installs it)"
# The placeholder recipient of manifests/drill.toml (its key was thrown away).
PLACEHOLDER=$(sed -n 's/^encrypt_to = \["\(age1[0-9a-z]*\)"\].*/\1/p' "$TEMPLATE")
[ -n "$PLACEHOLDER" ] || die "$TEMPLATE has no line encrypt_to = [\"age1…\"] to put the new key in"

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
trap 'echo "demo: failed: $BASH_COMMAND" >&2; exit 2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
T0=$(now)

# ---------------------------------------------------------------------------------------------
step "Sandbox MariaDB on 127.0.0.1:$PORT with database demo (customers 200k, orders 500k, events 20k rows)"
t0=$(now)
# A server left running by an interrupted demo would hold the port.
scripts/sandbox.sh stop "$SANDBOX" >/dev/null 2>&1 || true
rm -rf "$SANDBOX" "$BACKUPS" "$STATE" "$STATE-wal" "$STATE-shm" "$STATE-journal"
mkdir -p "$DEMO"
scripts/sandbox.sh start "$SANDBOX" "$PORT" >/dev/null
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

ANALYZE TABLE customers, orders, events;
SQL
mapfile -t TABLES < <(sql -N -B -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'demo' AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME")
echo "     ready in $(elapsed "$t0") s"

# ---------------------------------------------------------------------------------------------
step "storagetapper keygen -o $KEY; $MANIFEST = $TEMPLATE with its recipient"
# keygen never overwrites a key file: remove the previous run's.
rm -f "$KEY" "$WRONG_KEY"
RECIPIENT=$("$ST" -q keygen -o "$KEY" 2>/dev/null)
[[ $RECIPIENT == age1* ]] || die "keygen printed no recipient"
# The copy lives in target/demo/, so its relative paths drop the ../target/demo/ prefix.
sed -e "s/$PLACEHOLDER/$RECIPIENT/" -e 's#://\.\./target/demo/#://#' "$TEMPLATE" >"$MANIFEST"
grep -q "$RECIPIENT" "$MANIFEST" || die "the recipient did not make it into $MANIFEST"
echo "     recipient $RECIPIENT; key file mode $(stat -c %a "$KEY")"

# ---------------------------------------------------------------------------------------------
step "storagetapper backup -m $MANIFEST (avro, zstd, age)"
t0=$(now)
backup_line=$("$ST" -q --no-progress backup -m "$MANIFEST")
backup_secs=$(elapsed "$t0")
echo "     ${backup_line%% -> *}"
mapfile -t dirs < <(find "$BACKUPS/drill" -mindepth 1 -maxdepth 1 -type d | sort)
[ "${#dirs[@]}" -eq 1 ] || die "expected one backup under $BACKUPS/drill, found ${#dirs[@]}"
BACKUP=${dirs[0]}
for d in "$BACKUP"/*/; do
    mapfile -t chunks < <(cd "$d" && ls -- [0-9][0-9][0-9][0-9][0-9].*)
    range=${chunks[0]:-}
    [ "${#chunks[@]}" -le 1 ] || range+=" … ${chunks[-1]}"
    printf '     %-16s %s + %d chunk file(s) %s\n' "$(basename "$d")/" \
        "$(cd "$d" && echo [!0-9]*)" "${#chunks[@]}" "$range"
done

# ---------------------------------------------------------------------------------------------
step "Without the key the files are sealed"
plain=$(find "$BACKUP" -type f ! -name '*.age' ! -path "$BACKUP/metadata.json" | sort)
n_files=$(find "$BACKUP" -type f | wc -l)
if [ -z "$plain" ]; then
    check "sealed files" OK "$((n_files - 1)) of $n_files files are age files; only metadata.json is plain"
else
    check "sealed files" FAIL "not encrypted: $(echo $plain)"
fi
# Chunk keys are row data: they must be in keys.json.age, not in metadata.json.
if grep -Eq '"(first|last)_key": [^n]' "$BACKUP/metadata.json"; then
    check "no keys in metadata" FAIL "metadata.json holds chunk keys"
elif ! grep -q "\"$RECIPIENT\"" "$BACKUP/metadata.json"; then
    check "no keys in metadata" FAIL "metadata.json does not list $RECIPIENT in encryption_recipients"
else
    check "no keys in metadata" OK "metadata.json: encryption_recipients = [the new key], chunk keys null (in keys.json.age)"
fi
CHUNK=$(find "$BACKUP/demo.customers" -name '00000.*' | head -n 1)
[ -n "$CHUNK" ] || die "no chunk 00000 for demo.customers"
header=$(head -c 21 "$CHUNK")
if [ "$header" = age-encryption.org/v1 ] && ! zstd -tq "$CHUNK" 2>/dev/null; then
    check "age header" OK "${CHUNK#"$BACKUP"/} starts with \"$header\"; zstd cannot read it"
else
    check "age header" FAIL "${CHUNK#"$BACKUP"/} is not an age file"
fi
rc=0
out=$("$ST" -q verify -m "$MANIFEST" 2>&1 >/dev/null | grep '^error: ') || rc=$?
if [ "$rc" -eq 2 ] && [[ $out == *"give --identity"* ]]; then
    check "verify, no key" OK "exit 2: ${out#error: }"
else
    check "verify, no key" FAIL "exit $rc (expected 2): $out"
fi
"$ST" -q keygen -o "$WRONG_KEY" >/dev/null 2>&1
rc=0
out=$("$ST" -q verify -m "$MANIFEST" --identity "$WRONG_KEY" 2>&1 >/dev/null | grep '^error: ') || rc=$?
if [ "$rc" -eq 2 ] && [[ $out == *"cannot open "*".age"* ]]; then
    check "verify, wrong key" OK "exit 2: ${out#error: }"
else
    check "verify, wrong key" FAIL "exit $rc (expected 2): $out"
fi

# ---------------------------------------------------------------------------------------------
step "With the key the standard age CLI reads them: age -d -i $KEY <chunk> | zstd -d | head -c 4"
# head closes the pipe early, so age and zstd may die of SIGPIPE: judge by the bytes.
magic=$( (age -d -i "$KEY" "$CHUNK" | zstd -dcq | head -c 4 | od -An -tx1 | tr -d ' \n') || true)
if [ "$magic" = 4f626a01 ]; then
    check "age CLI" OK "$(basename "$CHUNK") → 4f 62 6a 01 = \"Obj\" 0x01, the Avro magic"
else
    check "age CLI" FAIL "$(basename "$CHUNK") → '${magic:-nothing}', expected 4f626a01 (Obj 0x01)"
fi

# ---------------------------------------------------------------------------------------------
step "storagetapper verify -m $MANIFEST --identity $KEY"
t0=$(now)
rc=0
out=$("$ST" -q verify -m "$MANIFEST" --identity "$KEY") || rc=$?
verify_secs=$(elapsed "$t0")
grep '^BAD ' <<<"$out" | sed 's/^/     /' || true
if [ "$rc" -eq 0 ]; then
    check "verify" OK "exit 0 in $verify_secs s: ${out##*: }"
else
    check "verify" FAIL "exit $rc (expected 0): ${out##*$'\n'}"
fi

# ---------------------------------------------------------------------------------------------
step "storagetapper restore -m $MANIFEST --identity $KEY --target $TARGET"
t0=$(now)
rc=0
restore_out=$("$ST" -q --no-progress restore -m "$MANIFEST" --identity "$KEY" --target "$TARGET" 2>&1) || rc=$?
restore_secs=$(elapsed "$t0")
if [ "$rc" -eq 0 ]; then
    check "restore" OK "exit 0: $(tail -n 1 <<<"$restore_out")"
else
    check "restore" FAIL "exit $rc: $(grep -m 1 '^error: ' <<<"$restore_out" || tail -n 1 <<<"$restore_out")"
fi

step "CHECKSUM TABLE demo.X against $RESTORE_DB.X"
tables_report=()
table_problems=0
# "rows checksum" of a table; empty when it cannot be read (e.g. missing).
count_sum() {
    sql -N -B -e "SELECT COUNT(*) FROM $1; CHECKSUM TABLE $1" 2>/dev/null |
        awk 'NR == 1 { n = $1 } NR == 2 { print n, $2 }' || true
}
for t in "${TABLES[@]}"; do
    q="\`${t//\`/\`\`}\`"
    src=$(count_sum "demo.$q")
    dst=$(count_sum "$RESTORE_DB.$q")
    result=OK
    if [ -z "$src" ] || [ "$src" != "$dst" ] || [ "${src#* }" = NULL ]; then
        result=MISMATCH
        table_problems=$((table_problems + 1))
    fi
    read -r src_rows src_sum <<<"${src:-? ?}"
    read -r dst_rows dst_sum <<<"${dst:-missing -}"
    tables_report+=("$(printf '%-16s %9s %12s   %9s %12s   %s' "demo.$t" "$src_rows" "$src_sum" \
        "$dst_rows" "$dst_sum" "$result")")
done
extra=$(sql -N -B -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$RESTORE_DB' AND TABLE_NAME NOT IN (SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'demo')" | tr '\n' ' ')
if [ -n "$extra" ]; then
    tables_report+=("$RESTORE_DB has tables the source lacks: $extra  MISMATCH")
    table_problems=$((table_problems + 1))
fi
printf '     %-16s %9s %12s   %9s %12s   %s\n' table "src rows" "src checksum" "rows" checksum result
printf '     %s\n' "${tables_report[@]}"
if [ "$table_problems" -eq 0 ]; then
    check "checksums" OK "${#TABLES[@]} of ${#TABLES[@]} tables: CHECKSUM TABLE and row count equal to the source"
else
    check "checksums" FAIL "$table_problems mismatch(es) between demo and $RESTORE_DB (table above)"
fi

# ---------------------------------------------------------------------------------------------
echo
step "Restore drill report: backup $(basename "$BACKUP"), encrypted to $RECIPIENT"
printf '  %s\n' "${checks[@]}"
printf '  times: backup %s s, verify %s s, restore %s s; whole drill %s s\n' \
    "$backup_secs" "$verify_secs" "$restore_secs" "$(elapsed "$T0")"
if [ "$problems" -ne 0 ]; then
    echo "demo: FAILED: $problems check(s) failed" >&2
    exit 1
fi
echo "demo: restore drill passed"
