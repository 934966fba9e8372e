#!/usr/bin/env bash
# Builds the Debian package: target/debian/pubpresence_<version>-1_<arch>.deb
#
#   bash packaging/build-deb.sh            # release binary (what to install on servers)
#   bash packaging/build-deb.sh --dev      # debug binary: no release build (tests, CI)
#   bash packaging/build-deb.sh --output DIR
#   bash packaging/build-deb.sh --dev --no-cargo-build   # target/debug/pubpresence is built already
#
# Steps: cargo build; `pubpresence generate` writes the man pages and the shell
# completions from the CLI definition into target/packaging/; `cargo deb
# --no-build` packs them with the assets listed in Cargo.toml
# ([package.metadata.deb]). Installs cargo-deb from crates.io when missing
# (`cargo install cargo-deb --locked --version 3.8.0`: 46 s on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=target/debian
build=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --dev) profile=dev ;;
        --release) profile=release ;;
        --output) out="$2"; shift ;;
        --no-cargo-build) build=no ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "build-deb.sh: cargo-deb is missing; installing it from crates.io" \
         "(cargo install cargo-deb --locked --version 3.8.0, about 1 minute)" >&2
    cargo install cargo-deb --locked --version 3.8.0
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$profile" in
    dev) bin_dir="$target_dir/debug" ;;
    *) bin_dir="$target_dir/$profile" ;;
esac

# One build of the package at a time (target/packaging is shared).
mkdir -p target
exec 9>target/packaging.lock
flock 9

if [ "$build" = yes ]; then
    cargo build --profile "$profile" --bin pubpresence
fi
if [ ! -x "$bin_dir/pubpresence" ]; then
    echo "build-deb.sh: $bin_dir/pubpresence is missing (build it first)" >&2
    exit 1
fi

gen=target/packaging
rm -rf "$gen"
"$bin_dir/pubpresence" generate --man "$gen/man" --completions "$gen/completions"
gzip -9n "$gen"/man/*.1

mkdir -p "$out"
# cargo-deb warns that the dev profile is for tests only: it is (--dev).
cargo deb --no-build --profile "$profile" --output "$out"
