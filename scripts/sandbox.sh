#!/usr/bin/env bash
# A private MariaDB server for the demo and for manual tests; it never reads the system my.cnf.
#
#   scripts/sandbox.sh start DIR PORT   initialise DIR/data (if new) and start mariadbd on
#                                       127.0.0.1:PORT and DIR/mysqld.sock, binlog on (ROW, FULL)
#   scripts/sandbox.sh stop DIR         stop the server started in DIR and wait for it to exit
#
# Connect with: mariadb -uroot -S DIR/mysqld.sock   (or -h127.0.0.1 -P PORT); root has no password.
set -euo pipefail

die() { echo "sandbox: $*" >&2; exit 2; }

usage() {
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
}

find_bin() {
    local name=$1 d
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return
    fi
    for d in /usr/sbin /usr/local/sbin /usr/bin /usr/local/bin /usr/local/mysql/bin; do
        [ -x "$d/$name" ] && { echo "$d/$name"; return; }
    done
    die "$name not found (install mariadb-server and mariadb-client, e.g. \`make deps\`)"
}

port_in_use() {
    # bash's /dev/tcp: a successful connect means something listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Alive and not a zombie (a child that exited stays a zombie until this script ends).
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}

server_pid() {
    local pidfile=$1/mysqld.pid pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    alive "$pid" || return 1
    echo "$pid"
}

start() {
    local dir=$1 port=$2
    [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "bad port \`$port\`"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # The socket path must fit in sockaddr_un (108 bytes).
    [ ${#dir} -lt 90 ] || die "directory path too long for a unix socket: $dir"
    if pid=$(server_pid "$dir"); then
        die "a server is already running in $dir (pid $pid); run \`$0 stop $dir\` first"
    fi
    if port_in_use "$port"; then
        die "port $port on 127.0.0.1 is already in use; stop whatever listens there or pick another port"
    fi

    local mariadbd install_db client user
    mariadbd=$(find_bin mariadbd)
    install_db=$(find_bin mariadb-install-db)
    client=$(find_bin mariadb)
    user=$(id -un)

    if [ ! -d "$dir/data/mysql" ]; then
        rm -rf "$dir/data"
        if ! "$install_db" --no-defaults --user="$user" --datadir="$dir/data" \
            --auth-root-authentication-method=normal >"$dir/install-db.log" 2>&1; then
            cat "$dir/install-db.log" >&2
            die "mariadb-install-db failed (log above, also in $dir/install-db.log)"
        fi
    fi

    rm -f "$dir/mysqld.sock" "$dir/mysqld.pid"
    : >"$dir/mysqld.err"
    # setsid: the server is not in our process group, so Ctrl-C in the caller's terminal does
    # not kill it before `stop` can shut it down cleanly.
    setsid "$mariadbd" --no-defaults --user="$user" --datadir="$dir/data" \
        --socket="$dir/mysqld.sock" --port="$port" --bind-address=127.0.0.1 \
        --log-bin="$dir/data/binlog" --binlog-format=ROW --binlog-row-image=FULL \
        --binlog-row-metadata=FULL --server-id=1 --pid-file="$dir/mysqld.pid" \
        --log-error="$dir/mysqld.err" </dev/null >>"$dir/mysqld.err" 2>&1 &
    local child=$!

    local deadline=$((SECONDS + 30))
    until "$client" --no-defaults -uroot -S "$dir/mysqld.sock" -e 'select 1' >/dev/null 2>&1; do
        if ! alive "$child"; then
            echo "---- $dir/mysqld.err ----" >&2
            cat "$dir/mysqld.err" >&2
            if grep -qi "address already in use" "$dir/mysqld.err"; then
                die "port $port is already in use"
            fi
            die "mariadbd exited during start-up (error log above)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "---- $dir/mysqld.err ----" >&2
            cat "$dir/mysqld.err" >&2
            kill "$child" 2>/dev/null || true
            die "mariadbd did not answer within 30 s (error log above)"
        fi
        sleep 0.2
    done
    echo "sandbox: mariadbd running in $dir (pid $child, port $port, socket $dir/mysqld.sock)"
}

stop() {
    local dir=$1 pid
    if ! pid=$(server_pid "$dir"); then
        echo "sandbox: no server running in $dir"
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + 30))
    while alive "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "sandbox: mariadbd (pid $pid) did not stop within 30 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$dir/mysqld.pid"
    echo "sandbox: stopped mariadbd in $dir (pid $pid)"
}

case "${1:-}" in
    start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || usage; stop "$2" ;;
    *) usage ;;
esac
