#!/usr/bin/env bash
# Builds the Debian package turbo-hipster_<version>_<arch>.deb.
#
#   scripts/package-deb.sh [--profile release|debug] [--no-build] [--out DIR]
#                          [--version VERSION] [--compression xz|gzip|zstd|none]
#                          [--dbgsym] [--lintian]
#
#   --profile      the cargo build to package (default release)
#   --no-build     package what is already built (target/<profile>)
#   --out          where the .deb goes (default target/debian)
#   --version      the package version (default: version of [workspace.package] in Cargo.toml)
#   --compression  of the package's data (default xz; gzip is much faster on a debug build)
#   --dbgsym       also build turbo-hipster-dbgsym_<version>_<arch>.deb with the debug symbols
#                  taken out of the binaries (/usr/lib/debug/.build-id/…)
#   --lintian      run lintian on the result (apt-get install lintian) and fail on its errors
#
# The tree is staged with scripts/install.sh --prefix /usr --no-state-dirs, the binaries are
# stripped, the maintainer scripts come from etc/debian/. Prints the path of each package
# built as its last lines. What the package holds and does: docs/packaging.md.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

die() {
    echo "package-deb.sh: error: $*" >&2
    exit 1
}

say() {
    echo "==> $*"
}

PROFILE=release
BUILD=1
OUT=
VERSION=
COMPRESSION=xz
DBGSYM=0
LINTIAN=0

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --profile) need_value "$1" $#; PROFILE=$2; shift 2 ;;
        --profile=*) PROFILE=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        --out) need_value "$1" $#; OUT=$2; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --version) need_value "$1" $#; VERSION=$2; shift 2 ;;
        --version=*) VERSION=${1#*=}; shift ;;
        --compression) need_value "$1" $#; COMPRESSION=$2; shift 2 ;;
        --compression=*) COMPRESSION=${1#*=}; shift ;;
        --dbgsym) DBGSYM=1; shift ;;
        --lintian) LINTIAN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case "$PROFILE" in
    release | debug) ;;
    *) die "--profile must be release or debug, got '$PROFILE'" ;;
esac
case "$COMPRESSION" in
    xz | gzip | zstd | none) ;;
    *) die "--compression must be xz, gzip, zstd or none, got '$COMPRESSION'" ;;
esac

umask 022
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR=$ROOT/$TARGET_DIR ;;
esac
OUT=${OUT:-$TARGET_DIR/debian}

for tool in dpkg-deb dpkg strip objcopy readelf gzip md5sum; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found in PATH (it comes with dpkg, binutils or gzip: apt-get install dpkg-dev binutils)"
done

# --- version and architecture ----------------------------------------------------------
if [ -z "$VERSION" ]; then
    VERSION=$(awk '
        /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]]/, "", section); next }
        section == "[workspace.package]" && /^[[:space:]]*version[[:space:]]*=/ {
            v = $0; sub(/^[^=]*=[[:space:]]*"/, "", v); sub(/".*$/, "", v); print v; exit
        }' Cargo.toml)
    [ -n "$VERSION" ] || die "no version in [workspace.package] of $ROOT/Cargo.toml"
    # cargo's 1.2.3-rc.1 becomes 1.2.3~rc.1: it sorts before 1.2.3, as in semver (a '-'
    # would start a Debian revision).
    VERSION=${VERSION/-/\~}
fi
printf '%s' "$VERSION" | grep -Eq '^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$' ||
    die "'$VERSION' is not a Debian version"
ARCH=$(dpkg --print-architecture)
PACKAGE=turbo-hipster
DEB=$OUT/${PACKAGE}_${VERSION#*:}_${ARCH}.deb
DBG_DEB=$OUT/${PACKAGE}-dbgsym_${VERSION#*:}_${ARCH}.deb

WORK=$(mktemp -d "${TMPDIR:-/tmp}/th-package.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root
DBG_STAGE=$WORK/dbgsym
mkdir -p "$STAGE" "$DBG_STAGE"
chmod 755 "$STAGE" "$DBG_STAGE"

# --- stage with install.sh --------------------------------------------------------------
say "Staging $PACKAGE $VERSION ($ARCH, $PROFILE build) with scripts/install.sh"
install_args=(--destdir "$STAGE" --prefix /usr --profile "$PROFILE" --no-state-dirs)
[ "$BUILD" -eq 1 ] || install_args+=(--no-build)
if ! bash "$ROOT/scripts/install.sh" "${install_args[@]}" >"$WORK/install.log" 2>&1; then
    cat "$WORK/install.log" >&2
    die "scripts/install.sh ${install_args[*]} failed"
fi
for f in usr/bin/turbo-hipster etc/turbo-hipster/config.json etc/init.d/turbo-hipster \
    lib/systemd/system/turbo-hipster.service; do
    [ -f "$STAGE/$f" ] || die "install.sh did not stage /$f"
done
[ ! -e "$STAGE/var" ] || die "install.sh staged /var despite --no-state-dirs"

# --- documentation ----------------------------------------------------------------------
DOC=$STAGE/usr/share/doc/$PACKAGE
install -d -m 755 "$DOC" "$DOC/examples"
install -m 644 etc/debian/copyright "$DOC/copyright"
for f in README.md docs/*.md; do
    gzip -9n -c "$f" >"$DOC/$(basename "$f").gz"
    chmod 644 "$DOC/$(basename "$f").gz"
done
cp -R etc/example/. "$DOC/examples/"
find "$DOC/examples" -type d -exec chmod 755 {} + -o -type f -exec chmod 644 {} +
# A native package's changelog: this version and the commit it was built from.
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
[ "$dirty" -gt 0 ] || dirty=
MAINTAINER=${DEB_MAINTAINER:-turbo-hipster maintainers <turbo-hipster@example.org>}
{
    echo "$PACKAGE ($VERSION) unstable; urgency=medium"
    echo
    echo "  * Built from commit $commit${dirty:+ (with uncommitted changes)}."
    echo
    echo " -- $MAINTAINER  $(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")"
} | gzip -9n >"$DOC/changelog.gz"
chmod 644 "$DOC/changelog.gz"

# --- strip, keeping the debug symbols aside for -dbgsym ------------------------------------
ELFS=("$STAGE/usr/bin/turbo-hipster")
while IFS= read -r -d '' so; do
    ELFS+=("$so")
done < <(find "$STAGE/usr/lib/turbo-hipster/plugins" -name '*.so' -type f -print0 | sort -z)
build_ids=()
for elf in "${ELFS[@]}"; do
    if [ "$DBGSYM" -eq 1 ]; then
        id=$(readelf -n "$elf" | sed -n 's/^[[:space:]]*Build ID: \([0-9a-f]*\)$/\1/p' | sed -n 1p)
        [ -n "$id" ] || die "${elf#"$STAGE"} has no build id: cannot make its -dbgsym"
        dbg=$DBG_STAGE/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug
        install -d -m 755 "$(dirname "$dbg")"
        objcopy --only-keep-debug --compress-debug-sections "$elf" "$dbg"
        chmod 644 "$dbg"
        build_ids+=("$id")
    fi
    # What dh_strip does: executables lose every symbol table, shared objects keep their
    # dynamic symbols (a plugin's root module is found through them).
    case "$elf" in
        *.so) strip --remove-section=.comment --remove-section=.note --strip-unneeded "$elf" ;;
        *) strip --remove-section=.comment --remove-section=.note "$elf" ;;
    esac
    if [ "$DBGSYM" -eq 1 ]; then
        objcopy --add-gnu-debuglink="$dbg" "$elf"
    fi
done

# --- dependencies -----------------------------------------------------------------------
# The shared libraries of the binaries: dpkg-shlibdeps when there is one (dpkg-dev), else the
# packages that hold what ldd resolves (without versions).
shlibs=
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$WORK/shlibs/debian"
    printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PACKAGE" "$PACKAGE" \
        >"$WORK/shlibs/debian/control"
    shlibdeps_args=()
    for elf in "${ELFS[@]}"; do shlibdeps_args+=("-e$elf"); done
    if out=$(cd "$WORK/shlibs" && dpkg-shlibdeps -O --warnings=0 "${shlibdeps_args[@]}" 2>"$WORK/shlibdeps.err"); then
        shlibs=$(printf '%s\n' "$out" | sed -n 's/^shlibs:Depends=//p')
    else
        echo "package-deb.sh: warning: dpkg-shlibdeps failed, using ldd: $(head -c 500 "$WORK/shlibdeps.err")" >&2
    fi
fi
if [ -z "$shlibs" ]; then
    command -v ldd >/dev/null 2>&1 || die "neither dpkg-shlibdeps nor ldd works here"
    pkgs=$(for elf in "${ELFS[@]}"; do ldd "$elf"; done |
        sed -n 's/^.*=> \(\/[^ ]*\) (0x.*$/\1/p' | sort -u |
        while read -r lib; do
            dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true
        done | sed 's/:.*$//' | sort -u)
    shlibs=$(printf '%s\n' libc6 $pkgs | sort -u | paste -sd, - | sed 's/,/, /g')
fi
case "$shlibs" in
    *libc6*) ;;
    *) die "the computed dependencies '$shlibs' do not name libc6" ;;
esac
# Run time: git (every job checks the change out through a cached mirror). The database
# clients are what the gate plugin runs for MariaDB/MySQL and PostgreSQL jobs (SQLite needs
# none); servers, gearmand and python3 (common migration tools) live where the operator says.
DEPENDS="$shlibs, git"
RECOMMENDS="mariadb-client | default-mysql-client, postgresql-client"
SUGGESTS="gearman-job-server, mariadb-server | postgresql, python3"

# --- control files ------------------------------------------------------------------------
# Installed-Size: KiB, each file rounded up, each directory 1 (as dpkg-gencontrol counts).
installed_size() {
    find "$1" -mindepth 1 \( -path "$1/DEBIAN" -prune \) -o \( -type d -printf '1024\n' \) \
        -o \( ! -type d -printf '%s\n' \) |
        awk '{ n += int(($1 + 1023) / 1024) } END { print n + 0 }'
}

control_dir() { # stage dir
    install -d -m 755 "$1/DEBIAN"
    (cd "$1" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
        xargs -0 -r md5sum) >"$1/DEBIAN/md5sums"
    chmod 644 "$1/DEBIAN/md5sums"
}

control_dir "$STAGE"
for script in postinst prerm postrm; do
    install -m 755 "etc/debian/$script" "$STAGE/DEBIAN/$script"
done
# Every file under /etc is a conffile: dpkg never overwrites an operator's change to one.
(cd "$STAGE" && find etc -type f -printf '/%p\n' | sort) >"$STAGE/DEBIAN/conffiles"
chmod 644 "$STAGE/DEBIAN/conffiles"
cat >"$STAGE/DEBIAN/control" <<EOF
Package: $PACKAGE
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(installed_size "$STAGE")
Depends: $DEPENDS
Recommends: $RECOMMENDS
Suggests: $SUGGESTS
Section: devel
Priority: optional
Description: Gearman worker for Zuul that tests database migrations
 turbo-hipster takes Zuul builds from Gearman and runs them through plugins:
 gate_real_db_upgrade applies a proposed change's database migrations to real
 datasets (SQLite, MariaDB/MySQL, PostgreSQL), times them against limits and
 reports regressions; shell_script runs a script for each build.
 .
 The daemon runs as a systemd service or from a SysV init script. The package
 enables and starts it only once /etc/turbo-hipster/config.json passes
 "turbo-hipster check-config".
EOF
chmod 644 "$STAGE/DEBIAN/control"

mkdir -p "$OUT"
build_deb() { # stage deb
    dpkg-deb --root-owner-group -Z"$COMPRESSION" --build "$1" "$2" >/dev/null
}
say "Building $DEB"
build_deb "$STAGE" "$DEB"
built=("$DEB")

if [ "$DBGSYM" -eq 1 ]; then
    install -d -m 755 "$DBG_STAGE/usr/share/doc"
    ln -s "$PACKAGE" "$DBG_STAGE/usr/share/doc/$PACKAGE-dbgsym"
    control_dir "$DBG_STAGE"
    cat >"$DBG_STAGE/DEBIAN/control" <<EOF
Package: $PACKAGE-dbgsym
Source: $PACKAGE
Version: $VERSION
Auto-Built-Package: debug-symbols
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(installed_size "$DBG_STAGE")
Depends: $PACKAGE (= $VERSION)
Section: debug
Priority: optional
Description: debug symbols for $PACKAGE
Build-Ids: ${build_ids[*]}
EOF
    chmod 644 "$DBG_STAGE/DEBIAN/control"
    say "Building $DBG_DEB"
    build_deb "$DBG_STAGE" "$DBG_DEB"
    built+=("$DBG_DEB")
fi

if [ "$LINTIAN" -eq 1 ]; then
    command -v lintian >/dev/null 2>&1 || die "lintian not found (apt-get install lintian)"
    say "lintian ${built[*]##*/}"
    # Errors fail the run; warnings are shown. Tags that do not fit a package built outside
    # a Debian source tree are listed (and explained) in etc/debian/lintian-suppress.
    lintian --fail-on error --suppress-tags-from-file etc/debian/lintian-suppress "${built[@]}"
fi

for deb in "${built[@]}"; do
    echo "$deb"
done
