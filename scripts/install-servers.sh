#!/usr/bin/env bash
# Installs the XMPP servers the end-to-end tests run against, on Debian 12,
# with apt only. Two generations side by side:
#
#   - Debian 12's own: Prosody 0.12.3 and ejabberd 23.01, installed with
#     apt-get as usual (/usr/bin/prosody, /usr/sbin/ejabberdctl);
#   - today's: Prosody 13.0.x and ejabberd 24.12 from bookworm-backports
#     (what Debian 13 ships), unpacked with `dpkg-deb -x` into private
#     directories under $LAB_SERVERS (default /opt/pubpresence-lab), so that
#     they never replace the first generation:
#       $LAB_SERVERS/prosody-13/     (usr/bin/prosody, usr/lib/prosody, ...)
#       $LAB_SERVERS/ejabberd-24.12/ (usr/sbin/ejabberdctl, its Erlang libs)
#     Both use Debian 12's Lua 5.4 and Erlang 25 with their C libraries
#     (the backports are built against them); only the packages that
#     backports carries in a newer version are unpacked.
#
# The lab (lab/src/) finds the second generation through the environment:
# PUBPRESENCE_PROSODY_ROOT and PUBPRESENCE_EJABBERD_ROOT name such a
# directory; unset, the apt-installed servers are used. Idempotent: a
# generation already in place is left alone.
set -euo pipefail

LAB_SERVERS=${LAB_SERVERS:-/opt/pubpresence-lab}
export DEBIAN_FRONTEND=noninteractive
updated=
apt_update() {
    if [ -z "$updated" ]; then
        apt-get update -qq
        updated=1
    fi
}

# --- Debian 12's generation, with apt ---------------------------------------
missing=()
command -v prosody >/dev/null 2>&1 || missing+=(prosody)
[ -x /usr/sbin/ejabberdctl ] || missing+=(ejabberd)
# The web feed's page is tested in a real headless Chromium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# mod_privilege (XEP-0356) for Prosody comes with prosody-modules.
[ -f /usr/lib/prosody/modules/mod_privilege/mod_privilege.lua ] || missing+=(prosody-modules)
# Prosody's SQLite driver: the pubsub component stores items with storage = "sql".
dpkg-query -W -f '${Status}' lua-dbi-sqlite3 2>/dev/null | grep -q "install ok installed" || missing+=(lua-dbi-sqlite3)
# ejabberd's SQLite driver and the sqlite3 command: the lab's cluster with
# mod_pubsub in SQL (its schema is loaded with sqlite3). Both generations
# use Debian 12's driver.
dpkg-query -W -f '${Status}' erlang-p1-sqlite3 2>/dev/null | grep -q "install ok installed" || missing+=(erlang-p1-sqlite3)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt_update
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- today's generation, from bookworm-backports ----------------------------
prosody_root="$LAB_SERVERS/prosody-13"
ejabberd_root="$LAB_SERVERS/ejabberd-24.12"
if [ -f "$prosody_root/.complete" ] && [ -f "$ejabberd_root/.complete" ]; then
    exit 0
fi

if ! apt-cache policy 2>/dev/null | grep -q 'bookworm-backports'; then
    echo "adding the bookworm-backports suite to apt's sources"
    cat > /etc/apt/sources.list.d/pubpresence-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    updated=
fi
apt_update

# Downloads the bookworm-backports version of each package named and unpacks
# it into $1. Only packages that backports really carries are asked for.
# A download that fails part-way (a mirror's hiccup) leaves some packages
# out, and a server missing a library fails only at run time (ejabberd
# 24.12 with Debian 12's erlang-p1-xmpp crashes on its first privilege
# message): each package is checked for, the missing ones asked for again,
# and the script fails if one still lacks.
unpack_backports() {
    local root=$1; shift
    local tmp
    tmp=$(mktemp -d)
    local want=("$@") missing=() attempt pkg
    for attempt in 1 2 3; do
        (cd "$tmp" && apt-get download -qq -t bookworm-backports "${want[@]}" 2>&1 \
            | grep -v '^W: Download is performed unsandboxed' || true)
        missing=()
        for pkg in "$@"; do
            ls "$tmp/${pkg%%=*}_"*.deb >/dev/null 2>&1 || missing+=("$pkg")
        done
        [ ${#missing[@]} -eq 0 ] && break
        echo "bookworm-backports: not downloaded (attempt $attempt of 3): ${missing[*]}" >&2
        want=("${missing[@]}")
        sleep 2
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "could not download from bookworm-backports: ${missing[*]} (is the suite in apt's sources and the mirror reachable? run apt-get update)" >&2
        rm -rf "$tmp"
        exit 1
    fi
    rm -rf "$root"
    mkdir -p "$root"
    for deb in "$tmp"/*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
    rm -rf "$tmp"
}

# The names of ejabberd's erlang-* dependencies of which bookworm-backports
# has its own (newer) build: those must come with it; the rest are Debian
# 12's, installed with ejabberd 23.01 above.
backported_deps() {
    apt-cache show -t bookworm-backports "ejabberd=$1" 2>/dev/null \
        | sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' \
        | sed 's/^ *//; s/ .*//; s/|.*//' | grep '^erlang-' | sort -u \
        | while read -r dep; do
            if apt-cache madison "$dep" | grep -q 'bookworm-backports'; then
                echo "$dep"
            fi
        done
}

if [ ! -f "$prosody_root/.complete" ]; then
    echo "unpacking Prosody 13 and prosody-modules from bookworm-backports into $prosody_root"
    unpack_backports "$prosody_root" prosody prosody-modules
    # The scripts name their source tree absolutely: point them at ours.
    for script in prosody prosodyctl; do
        sed -i \
            -e "s|^CFG_SOURCEDIR=.*|CFG_SOURCEDIR='$prosody_root/usr/lib/prosody';|" \
            -e "s|^CFG_PLUGINDIR=.*|CFG_PLUGINDIR='$prosody_root/usr/lib/prosody/modules/';|" \
            "$prosody_root/usr/bin/$script"
    done
    "$prosody_root/usr/bin/prosodyctl" about >/dev/null 2>&1 \
        || { echo "the unpacked Prosody does not run: $prosody_root/usr/bin/prosodyctl about" >&2; exit 1; }
    touch "$prosody_root/.complete"
fi

if [ ! -f "$ejabberd_root/.complete" ]; then
    version=$(apt-cache madison ejabberd | awk '/bookworm-backports/ {print $3; exit}')
    [ -n "$version" ] || { echo "bookworm-backports has no ejabberd" >&2; exit 1; }
    echo "unpacking ejabberd $version from bookworm-backports into $ejabberd_root"
    # shellcheck disable=SC2046
    unpack_backports "$ejabberd_root" "ejabberd=$version" $(backported_deps "$version")
    # ejabberdctl sets ERL_LIBS to the system's ejabberd: point it at ours.
    # Applications in ERL_LIBS come before the OTP library directory, so the
    # backported erlang-p1-* libraries win over Debian 12's.
    sed -i "s|^ERL_LIBS=.*|ERL_LIBS='$ejabberd_root/usr/lib/x86_64-linux-gnu:$ejabberd_root/usr/lib/erlang/lib'|" \
        "$ejabberd_root/usr/sbin/ejabberdctl"
    touch "$ejabberd_root/.complete"
fi
