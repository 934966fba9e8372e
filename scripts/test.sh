#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine: installs what the tests
# need (both generations of Prosody and ejabberd, and their helpers, with
# apt: scripts/install-servers.sh), then format, lint and every test.
#
# The end-to-end suites run twice: against Debian 12's servers (Prosody
# 0.12.3, ejabberd 23.01) and against today's (Prosody 13.0.x, ejabberd
# 24.12, from bookworm-backports). Each lab server prints the software and
# version it runs (`lab: Prosody 13.0.1 in ...`), shown with a failing test.
set -euo pipefail
cd "$(dirname "$0")/.."

LAB_SERVERS=${LAB_SERVERS:-/opt/pubpresence-lab}
export LAB_SERVERS
bash scripts/install-servers.sh
# Debian's packages may start a system-wide server; the tests start their own
# on free loopback ports and never touch it.

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run both binaries (the shipped `pubpresence` and the
# lab's `pubpresence-lab`), each from its crate's tests: build both first.
cargo build --workspace --bins

threads="${TEST_THREADS:-2}"
version_of_ejabberd() {
    ls "$1/usr/lib/x86_64-linux-gnu" | sed -n 's/^ejabberd-\([0-9.]*\)$/\1/p' | head -1
}
echo "== every test; end-to-end against Prosody $(cat /usr/lib/prosody/prosody.version) and ejabberd $(version_of_ejabberd /) (Debian 12)"
cargo test --workspace --all-targets -- --test-threads="$threads"

# The second generation: every suite that starts a server. Not the package
# test (deb.rs: it installs the .deb, no server) nor the parsers' properties.
e2e=()
for f in tests/*.rs lab/tests/*.rs; do
    name=$(basename "$f" .rs)
    case "$name" in deb|parsing_props) continue ;; esac
    e2e+=(--test "$name")
done
export PUBPRESENCE_PROSODY_ROOT="$LAB_SERVERS/prosody-13"
export PUBPRESENCE_EJABBERD_ROOT="$LAB_SERVERS/ejabberd-24.12"
echo "== end-to-end against Prosody $(cat "$PUBPRESENCE_PROSODY_ROOT/usr/lib/prosody/prosody.version") and ejabberd $(version_of_ejabberd "$PUBPRESENCE_EJABBERD_ROOT") (bookworm-backports)"
cargo test --workspace "${e2e[@]}" -- --test-threads="$threads"
