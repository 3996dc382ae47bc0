#!/usr/bin/env bash
# Installs what the tests and the demo need from Debian packages when it is missing:
# MariaDB server and client (a private server is started per test binary), zstd and the age CLI.
set -euo pipefail
need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v age >/dev/null 2>&1 || need+=(age)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "installing: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# The package's own service must not start: tests run private servers.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
