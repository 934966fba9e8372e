#!/usr/bin/env bash
# The one-command demo on a fresh Debian machine: installs Prosody and its
# SQLite driver when missing, builds pubpresence, and runs `pubpresence-lab demo`
# (a throwaway Prosody on loopback, the component, simulated users and the
# live watch table). Arguments go to the demo: --json, --duration 30s,
# --users 12, --rate 5. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prosody >/dev/null 2>&1 || missing+=(prosody)
# Prosody's SQLite driver: the demo's pubsub service stores items with storage = "sql".
dpkg-query -W -f '${Status}' lua-dbi-sqlite3 2>/dev/null | grep -q "install ok installed" || missing+=(lua-dbi-sqlite3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's package may start a system-wide Prosody; the demo starts its own
# on free loopback ports and never touches it.

# Both binaries: the lab's demo, and the shipped one its hint names.
cargo build --release --quiet --workspace --bins
exec target/release/pubpresence-lab demo "$@"
