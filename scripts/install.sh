#!/usr/bin/env bash
# Builds turbo-hipster and its plugins in release mode and installs them.
#
#   scripts/install.sh [--destdir DIR] [--prefix /usr] [--no-build] [--profile release|debug]
#                      [--no-state-dirs]
#
# Installed layout (DIR defaults to /, PREFIX to /usr):
#   DIR/PREFIX/bin/turbo-hipster
#   DIR/PREFIX/lib/turbo-hipster/plugins/<plugin>/libtask.so   one per plugins/*/Cargo.toml
#   DIR/etc/turbo-hipster/config.json                          only if not there yet
#   DIR/etc/turbo-hipster/conf.d/
#   DIR/etc/init.d/turbo-hipster
#   DIR/lib/systemd/system/turbo-hipster.service
#   DIR/var/lib/turbo-hipster/{jobs,git,datasets,logs}/
#   DIR/var/log/turbo-hipster/
# Running it again upgrades the binaries and service files and keeps the config.
# --no-state-dirs leaves out the two var/ lines (scripts/package-deb.sh stages with it: the
# package's postinst makes them, so that dpkg does not own them and removing it keeps them).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

DESTDIR=/
PREFIX=/usr
BUILD=1
PROFILE=release
STATE_DIRS=1

while [ $# -gt 0 ]; do
    case "$1" in
        --destdir)
            [ $# -ge 2 ] || die "--destdir needs a directory"
            DESTDIR=$2
            shift 2
            ;;
        --destdir=*)
            DESTDIR=${1#--destdir=}
            shift
            ;;
        --prefix)
            [ $# -ge 2 ] || die "--prefix needs a directory"
            PREFIX=$2
            shift 2
            ;;
        --prefix=*)
            PREFIX=${1#--prefix=}
            shift
            ;;
        --no-build)
            BUILD=0
            shift
            ;;
        --no-state-dirs)
            STATE_DIRS=0
            shift
            ;;
        --profile)
            [ $# -ge 2 ] || die "--profile needs a name (release or debug)"
            PROFILE=$2
            shift 2
            ;;
        --profile=*)
            PROFILE=${1#--profile=}
            shift
            ;;
        -h|--help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done

[ -n "$DESTDIR" ] || die "--destdir must not be empty"
case "$DESTDIR" in
    /*) ;;
    *) DESTDIR=$PWD/$DESTDIR ;;
esac
case "$PREFIX" in
    /*) ;;
    *) die "--prefix must be an absolute path, got '$PREFIX'" ;;
esac
# Normalise: no trailing slashes (but keep "/" usable as a prefix of absolute paths).
PREFIX=${PREFIX%/}
DESTDIR=${DESTDIR%/}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "installing into / needs root (run it with sudo, or use --destdir DIR)"
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR=$ROOT/$TARGET_DIR ;;
esac
case "$PROFILE" in
    release|debug) ;;
    *) die "--profile must be release or debug, got '$PROFILE'" ;;
esac
RELEASE_DIR=$TARGET_DIR/$PROFILE
if [ "$PROFILE" = release ]; then CARGO_PROFILE_FLAG=--release; else CARGO_PROFILE_FLAG=; fi

# Prints the file name stem of a plugin crate's cdylib: [lib] name, else the package
# name with '-' turned into '_' (what cargo does).
plugin_lib_name() {
    awk '
        /^[[:space:]]*\[/ {
            section = $0
            gsub(/[[:space:]]/, "", section)
            next
        }
        /^[[:space:]]*name[[:space:]]*=/ {
            value = $0
            sub(/^[^=]*=[[:space:]]*"/, "", value)
            sub(/".*$/, "", value)
            if (section == "[lib]") lib = value
            else if (section == "[package]") pkg = value
        }
        END {
            name = (lib != "") ? lib : pkg
            gsub(/-/, "_", name)
            print name
        }
    ' "$1"
}

# Installs a file atomically (copy beside the target, then rename), so that a running
# daemon that has the old binary or plugin mapped is not disturbed.
install_file() {
    local mode=$1 src=$2 dst=$3
    install -d -m 755 "$(dirname "$dst")"
    local tmp
    tmp="$dst.install-tmp.$$"
    install -m "$mode" "$src" "$tmp"
    mv -f "$tmp" "$dst"
    echo "  installed $dst"
}

install_dir() {
    install -d -m "$1" "$2"
    echo "  directory $2"
}

# Copies a text file, replacing the default /usr prefix by PREFIX where it names our
# binary or plugin directory.
install_text() {
    local mode=$1 src=$2 dst=$3
    if [ "$PREFIX" = /usr ]; then
        install_file "$mode" "$src" "$dst"
        return
    fi
    local tmp
    tmp=$(mktemp)
    sed -e "s#/usr/bin/turbo-hipster#$PREFIX/bin/turbo-hipster#g" \
        -e "s#/usr/lib/turbo-hipster#$PREFIX/lib/turbo-hipster#g" "$src" > "$tmp"
    install_file "$mode" "$tmp" "$dst"
    rm -f "$tmp"
}

# --- build -----------------------------------------------------------------------------
if [ "$BUILD" -eq 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found in PATH (build as your user with
  'cargo build --release --workspace', then run this script as root with --no-build)"
    echo "==> Building: cargo build $CARGO_PROFILE_FLAG --workspace"
    # shellcheck disable=SC2086
    cargo build $CARGO_PROFILE_FLAG --workspace
else
    echo "==> Skipping the build (--no-build); using $RELEASE_DIR"
fi

# --- check what is to be installed -----------------------------------------------------
BINARY=$RELEASE_DIR/turbo-hipster
[ -x "$BINARY" ] || die "$BINARY not found: build with 'cargo build --release --workspace' first"

plugin_names=()
plugin_libs=()
for manifest in "$ROOT"/plugins/*/Cargo.toml; do
    [ -e "$manifest" ] || continue
    plugin=$(basename "$(dirname "$manifest")")
    lib=$(plugin_lib_name "$manifest")
    [ -n "$lib" ] || die "cannot read the crate name from $manifest"
    so=$RELEASE_DIR/lib$lib.so
    [ -f "$so" ] || die "$so (plugin $plugin) not found: build with 'cargo build --release --workspace' first"
    plugin_names+=("$plugin")
    plugin_libs+=("$so")
done
[ "${#plugin_names[@]}" -gt 0 ] || die "no plugins found under $ROOT/plugins/*/Cargo.toml"

for f in etc/config.json etc/init.d/turbo-hipster etc/turbo-hipster.service; do
    [ -f "$ROOT/$f" ] || die "$ROOT/$f is missing"
done

D=$DESTDIR
echo "==> Installing into ${DESTDIR:-/} (prefix $PREFIX)"

# --- binaries --------------------------------------------------------------------------
install_file 755 "$BINARY" "$D$PREFIX/bin/turbo-hipster"
for i in "${!plugin_names[@]}"; do
    install_file 755 "${plugin_libs[$i]}" \
        "$D$PREFIX/lib/turbo-hipster/plugins/${plugin_names[$i]}/libtask.so"
done

# --- configuration ---------------------------------------------------------------------
install_dir 755 "$D/etc/turbo-hipster"
install_dir 755 "$D/etc/turbo-hipster/conf.d"
CONFIG=$D/etc/turbo-hipster/config.json
if [ -e "$CONFIG" ]; then
    echo "  kept      $CONFIG (already present, not overwritten; the example is $ROOT/etc/config.json)"
else
    install_text 644 "$ROOT/etc/config.json" "$CONFIG"
fi

# --- service files ---------------------------------------------------------------------
install_text 755 "$ROOT/etc/init.d/turbo-hipster" "$D/etc/init.d/turbo-hipster"
install_text 644 "$ROOT/etc/turbo-hipster.service" "$D/lib/systemd/system/turbo-hipster.service"

# --- state and log directories ---------------------------------------------------------
if [ "$STATE_DIRS" -eq 1 ]; then
    for dir in var/lib/turbo-hipster var/lib/turbo-hipster/jobs var/lib/turbo-hipster/git \
        var/lib/turbo-hipster/datasets var/lib/turbo-hipster/logs var/log/turbo-hipster; do
        install_dir 755 "$D/$dir"
    done
fi

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload && echo "  ran       systemctl daemon-reload"
fi

echo "==> Done: turbo-hipster and ${#plugin_names[@]} plugin(s) (${plugin_names[*]}) installed."
if [ -z "$DESTDIR" ]; then
    echo "    Edit /etc/turbo-hipster/config.json, then start it with"
    echo "      systemctl enable --now turbo-hipster     (systemd)"
    echo "      /etc/init.d/turbo-hipster start          (SysV init)"
fi
