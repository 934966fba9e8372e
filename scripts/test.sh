#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what the tests
# need (Prosody, ejabberd and their helpers from Debian's packages), then
# format, lint and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v prosody >/dev/null 2>&1 || missing+=(prosody)
command -v ejabberdctl >/dev/null 2>&1 || [ -x /usr/sbin/ejabberdctl ] || missing+=(ejabberd)
# The web feed's page is tested in a real headless Chromium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# mod_privilege (XEP-0356) for Prosody comes with prosody-modules.
[ -f /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua ] || missing+=(prosody-modules)
# Prosody's SQLite driver: the pubsub component stores items with storage = "sql".
dpkg-query -W -f '${Status}' lua-dbi-sqlite3 2>/dev/null | grep -q "install ok installed" || missing+=(lua-dbi-sqlite3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's packages may start a system-wide server; the tests start their own
# on free loopback ports and never touch it.

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets -- --test-threads="${TEST_THREADS:-2}"
