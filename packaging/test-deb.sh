#!/usr/bin/env bash
# End-to-end test of the Debian package, on this machine (run by tests/deb.rs,
# which holds a system-wide lock so that only one runs at a time):
# build (debug binary), dpkg -i, check-config on the sample config, man -w,
# systemd-analyze verify, dpkg -r (user and config stay), dpkg -P (everything
# the package installed is gone, the user too). Purges even on failure.
#
#   bash packaging/test-deb.sh [--no-cargo-build]
#
# Needs root (dpkg). Refuses to run if pubpresence is already installed or its
# user or /etc/pubpresence exists: it would not leave the machine as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

build_args=(--dev)
[ "${1:-}" = "--no-cargo-build" ] && build_args+=(--no-cargo-build)

step() { echo "test-deb: $*"; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (dpkg -i / dpkg -P)"
if dpkg-query -W -f '${Status}' pubpresence 2>/dev/null | grep -qv "not-installed"; then
    fail "package pubpresence is already on this machine ($(dpkg-query -W -f '${Status}' pubpresence)): refusing to replace and purge it"
fi
getent passwd pubpresence >/dev/null && fail "user pubpresence exists already: refusing (purge would remove it)"
getent group pubpresence >/dev/null && fail "group pubpresence exists already: refusing (purge would remove it)"
[ -e /etc/pubpresence ] && fail "/etc/pubpresence exists already: refusing (purge would remove it)"
[ -e /var/lib/pubpresence ] && fail "/var/lib/pubpresence exists already: refusing (purge would remove it)"

work=$(mktemp -d)
cleanup() {
    local rc=$?
    if dpkg-query -W -f '${Status}' pubpresence 2>/dev/null | grep -qv "not-installed"; then
        echo "test-deb: cleanup: dpkg -P pubpresence" >&2
        dpkg -P pubpresence >/dev/null 2>&1 || echo "test-deb: cleanup: dpkg -P failed" >&2
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# man -w needs man-db.
if ! command -v man >/dev/null 2>&1; then
    step "installing man-db (man -w)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq man-db >/dev/null
fi

t0=$SECONDS
step "building the package (build-deb.sh ${build_args[*]})"
bash packaging/build-deb.sh "${build_args[@]}" --output "$work"
deb=$(ls "$work"/pubpresence_*.deb)
step "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) in $((SECONDS - t0)) s"

# The contents.
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/pubpresence ./lib/systemd/system/pubpresence.service \
         ./etc/pubpresence/pubpresence.toml ./usr/share/man/man1/pubpresence.1.gz \
         ./usr/share/bash-completion/completions/pubpresence \
         ./usr/share/zsh/vendor-completions/_pubpresence \
         ./usr/share/fish/vendor_completions.d/pubpresence.fish; do
    grep -q " $f\$" <<<"$contents" || fail "$f missing from the package"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/pubpresence/pubpresence.toml \
    || fail "/etc/pubpresence/pubpresence.toml is not a conffile"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst | grep -v '^[[:space:]]*#' | grep -Eq 'systemctl (enable|start|restart)|deb-systemd-invoke' \
    && fail "postinst enables or starts the service"

step "dpkg -i"
dpkg -i "$deb"
installed=$(dpkg -L pubpresence)

getent passwd pubpresence >/dev/null || fail "user pubpresence not created"
shell=$(getent passwd pubpresence | cut -d: -f7)
case "$shell" in */nologin|*/false) ;; *) fail "user pubpresence has a login shell: $shell" ;; esac
cmp -s contrib/pubpresence.service /lib/systemd/system/pubpresence.service \
    || fail "/lib/systemd/system/pubpresence.service differs from contrib/pubpresence.service"
[ -e /etc/systemd/system/multi-user.target.wants/pubpresence.service ] && fail "the service was enabled by installing"
if [ -d /run/systemd/system ] && systemctl is-active --quiet pubpresence; then
    fail "the service was started by installing"
fi
[ "$(stat -c %U:%G:%a /etc/pubpresence/pubpresence.toml)" = root:pubpresence:640 ] \
    || fail "config owner/mode: $(stat -c %U:%G:%a /etc/pubpresence/pubpresence.toml)"
[ "$(stat -c %U:%G:%a /var/lib/pubpresence)" = pubpresence:pubpresence:700 ] \
    || fail "state_dir owner/mode: $(stat -c %U:%G:%a /var/lib/pubpresence)"

step "check-config on the sample config"
if env -u PUBPRESENCE_SECRET pubpresence check-config /etc/pubpresence/pubpresence.toml >/dev/null 2>&1; then
    fail "check-config accepted the sample config without a secret"
fi
PUBPRESENCE_SECRET=x pubpresence check-config /etc/pubpresence/pubpresence.toml
# ... also as the service's user (reads the config through its group).
PUBPRESENCE_SECRET=x runuser -u pubpresence -- pubpresence check-config /etc/pubpresence/pubpresence.toml >/dev/null \
    || fail "user pubpresence cannot read the config"

step "man -w"
man -w pubpresence || fail "man -w pubpresence found no page"
man -w pubpresence-run >/dev/null || fail "man -w pubpresence-run found no page"

if command -v systemd-analyze >/dev/null 2>&1; then
    step "systemd-analyze verify"
    systemd-analyze verify /lib/systemd/system/pubpresence.service
else
    step "systemd-analyze not found: unit not verified"
fi

step "dpkg -r: the user and the config stay"
dpkg -r pubpresence
[ -e /usr/bin/pubpresence ] && fail "/usr/bin/pubpresence still there after remove"
getent passwd pubpresence >/dev/null || fail "remove deleted the user"
[ -f /etc/pubpresence/pubpresence.toml ] || fail "remove deleted the conffile"

step "dpkg -P: everything goes"
dpkg -P pubpresence
left=()
while IFS= read -r f; do
    [ -z "$f" ] && continue
    # Shared directories (/usr, /usr/share/man/man1, ...) may stay; files may not.
    if [ -e "$f" ] && ! [ -d "$f" ]; then left+=("$f"); fi
done <<<"$installed"
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
for d in /etc/pubpresence /usr/share/doc/pubpresence /var/lib/pubpresence; do
    [ -e "$d" ] && fail "$d left after purge"
done
getent passwd pubpresence >/dev/null && fail "user pubpresence left after purge"
getent group pubpresence >/dev/null && fail "group pubpresence left after purge"
dpkg-query -W -f '${Status}' pubpresence 2>/dev/null | grep -qv "not-installed" && fail "dpkg still knows pubpresence"

step "ok in $((SECONDS - t0)) s"
