#!/usr/bin/env bash
# The whole of turbo-hipster on one machine, in a temporary directory:
#
#   1. installs what is missing (gearmand, the gearman tools, git; `apt-get update` runs only
#      when something has to be installed), and builds the daemon and the plugin (debug);
#   2. makes a git repository of etc/example/project (the project `example/shop`) with a
#      proposed change adding migrations/004_add_loyalty_points.sql, published as Zuul's
#      merger would: refs/zuul/master/Z<hex>;
#   3. starts gearmand on 127.0.0.1 and a free port, and the daemon with the
#      gate_real_db_upgrade plugin and the example dataset (etc/example/datasets);
#   4. submits the build as Zuul does (`turbo-hipster enqueue`), follows it to its result,
#      prints the job's summary.txt, stops the daemon and gearmand, and exits 0 only when the
#      result is SUCCESS.
#
# Usage: scripts/demo.sh [--engine sqlite|mariadb|postgresql] [--keep]
#
#   --engine  the database engine of the example dataset (default sqlite: no server needed).
#             mariadb expects root@127.0.0.1:3306 with an empty password, postgresql
#             postgres@127.0.0.1:5432 with trust authentication, and their command-line
#             clients: scripts/setup-test-env.sh installs and configures both servers.
#   --keep    keep the temporary directory (it is also kept when the job fails).
#
# Needs: Debian (or apt), a Rust toolchain (cargo), python3 or bash for finding a free port.
set -euo pipefail

PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
ENGINE=sqlite
KEEP=${TH_DEMO_KEEP:-0}
JOB=build:gate-real-db-upgrade

say() { echo "demo: $*"; }
die() {
    echo "demo: error: $*" >&2
    exit 2
}
have() { command -v "$1" >/dev/null 2>&1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        --engine) [ $# -ge 2 ] || die "--engine needs a value"; ENGINE=$2; shift 2 ;;
        --engine=*) ENGINE=${1#--engine=}; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $ENGINE in
    sqlite | mariadb | postgresql) ;;
    mysql) ENGINE=mariadb ;;
    postgres) ENGINE=postgresql ;;
    *) die "--engine must be sqlite, mariadb or postgresql, not $ENGINE" ;;
esac

REPO=$(cd "$(dirname "$0")/.." && pwd)

# --- 1. What the demo needs ----------------------------------------------------------------

missing=()
have gearmand || missing+=(gearman-job-server)
have gearadmin || missing+=(gearman-tools)
have git || missing+=(git)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif have sudo; then
        SUDO=(sudo)
    else
        die "${missing[*]} missing, and installing needs root (or sudo)"
    fi
    have apt-get || die "${missing[*]} missing and there is no apt-get: install them by hand"
    "${SUDO[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! have cargo && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
have cargo || die "no cargo: install a Rust toolchain first (https://rustup.rs)"

case $ENGINE in
    mariadb)
        MYSQL=$(command -v mariadb || command -v mysql || true)
        [ -n "$MYSQL" ] || die "no mariadb/mysql client; run scripts/setup-test-env.sh (as root) first"
        "$MYSQL" --no-defaults --protocol=tcp -h127.0.0.1 -P3306 -uroot -e 'select 1' >/dev/null 2>&1 ||
            die "MariaDB does not take root@127.0.0.1:3306 with an empty password; run scripts/setup-test-env.sh (as root) first"
        ;;
    postgresql)
        have psql || die "no psql; run scripts/setup-test-env.sh (as root) first"
        psql -w -X -q -U postgres -h 127.0.0.1 -p 5432 -d postgres -c 'select 1' >/dev/null 2>&1 ||
            die "PostgreSQL does not take postgres@127.0.0.1:5432 (trust); run scripts/setup-test-env.sh (as root) first"
        ;;
esac

say "building the daemon and the plugin (cargo build, debug)"
(cd "$REPO" && cargo build -q -p turbo-hipster -p gate_real_db_upgrade)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}/debug
TH=$TARGET/turbo-hipster
[ -x "$TH" ] || die "$TH was not built"

# --- Clean-up, whatever happens ------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/th-demo.XXXXXX")
DAEMON_PID=
GEARMAND_PID=
STATUS=2

# shellcheck disable=SC2317 # called from the EXIT trap
stop_pid() { # pid name seconds
    local pid=$1 name=$2 wait=$3
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((wait * 10))); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    say "$name did not stop within ${wait}s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    stop_pid "$DAEMON_PID" "the daemon" 30
    stop_pid "$GEARMAND_PID" "gearmand" 10
    if [ "$KEEP" = 1 ] || [ "$STATUS" -ne 0 ]; then
        say "kept $WORK (daemon log: $WORK/turbo-hipster.log)"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 2. The project and the proposed change -------------------------------------------------

UPSTREAM=$WORK/upstream
PROJECT_DIR=$UPSTREAM/example/shop
mkdir -p "$PROJECT_DIR"
cp -R "$REPO/etc/example/project/." "$PROJECT_DIR/"
g() { git -C "$PROJECT_DIR" -c user.name="turbo-hipster demo" -c user.email=demo@example.org \
    -c commit.gpgsign=false -c init.defaultBranch=master "$@"; }
g init -q
g add -A
g commit -q -m "example/shop: the shop's schema, migrations 001 to 003"
g checkout -q -b proposed-change
cat >"$PROJECT_DIR/migrations/004_add_loyalty_points.sql" <<'SQL'
-- Loyalty points: one per order so far.
ALTER TABLE customers ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;
UPDATE customers SET loyalty_points =
    (SELECT COUNT(*) FROM orders WHERE orders.customer_id = customers.id);
SQL
g add -A
g commit -q -m "Add loyalty points to customers"
CHANGE_SHA=$(g rev-parse HEAD)
ZUUL_REF=refs/zuul/master/Z$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
g update-ref "$ZUUL_REF" "$CHANGE_SHA"
g checkout -q master
say "proposed change $CHANGE_SHA published as $ZUUL_REF"

# --- 3. gearmand and the daemon ---------------------------------------------------------------

free_port() {
    if have python3; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

PORT=$(free_port)
gearmand -L 127.0.0.1 -p "$PORT" --log-file "$WORK/gearmand.log" >/dev/null 2>&1 &
GEARMAND_PID=$!
for _ in $(seq 100); do
    gearadmin -h 127.0.0.1 -p "$PORT" --server-version >/dev/null 2>&1 && break
    kill -0 "$GEARMAND_PID" 2>/dev/null || die "gearmand exited: $(tail -5 "$WORK/gearmand.log" 2>/dev/null)"
    sleep 0.1
done
gearadmin -h 127.0.0.1 -p "$PORT" --server-version >/dev/null 2>&1 || die "gearmand did not answer on port $PORT"
say "gearmand listening on 127.0.0.1:$PORT"

mkdir -p "$WORK/plugins/gate_real_db_upgrade" "$WORK/jobs" "$WORK/git"
cp "$TARGET/libgate_real_db_upgrade.so" "$WORK/plugins/gate_real_db_upgrade/libtask.so"
CONFIG=$WORK/config.json
cat >"$CONFIG" <<JSON
{
    "gearman_servers": ["127.0.0.1:$PORT"],
    "max_concurrent_jobs": 1,
    "jobs_working_dir": "$WORK/jobs",
    "git_working_dir": "$WORK/git",
    "plugin_dirs": ["$WORK/plugins"],
    "jobs": [
        {
            "name": "$JOB",
            "plugin": "gate_real_db_upgrade",
            "datasets_dir": "$REPO/etc/example/datasets",
            "engine": "$ENGINE"
        }
    ]
}
JSON
"$TH" -c "$CONFIG" check-config >/dev/null || die "the demo config does not validate: $TH -c $CONFIG check-config"

"$TH" -c "$CONFIG" >"$WORK/turbo-hipster.log" 2>&1 &
DAEMON_PID=$!
registered=
for _ in $(seq 300); do
    kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon exited: $(tail -20 "$WORK/turbo-hipster.log")"
    # admin status: FUNCTION<TAB>queued<TAB>running<TAB>workers
    if gearadmin -h 127.0.0.1 -p "$PORT" --status 2>/dev/null |
        awk -v f="$JOB" -F'\t' '$1 == f && $4 > 0 { ok = 1 } END { exit !ok }'; then
        registered=1
        break
    fi
    sleep 0.1
done
[ -n "$registered" ] || die "the daemon did not register $JOB: $(tail -20 "$WORK/turbo-hipster.log")"
say "the daemon (pid $DAEMON_PID) serves $JOB with engine $ENGINE"

# --- 4. The build, as Zuul submits it ---------------------------------------------------------

set +e
"$TH" enqueue "$JOB" --server "127.0.0.1:$PORT" \
    --param ZUUL_PROJECT=example/shop \
    --param "ZUUL_URL=$UPSTREAM" \
    --param "ZUUL_REF=$ZUUL_REF" \
    --param ZUUL_BRANCH=master \
    --param "ZUUL_COMMIT=$CHANGE_SHA" \
    --timeout 900 | tee "$WORK/enqueue.out"
STATUS=${PIPESTATUS[0]}
set -e

URL=$(sed -n 's/^url: //p' "$WORK/enqueue.out" | tail -n 1)
RESULTS=
case $URL in
    file://*) RESULTS=${URL#file://} RESULTS=${RESULTS%index.html} RESULTS=${RESULTS%/} ;;
esac
if [ -z "$RESULTS" ] || [ ! -f "$RESULTS/summary.txt" ]; then
    RESULTS=$(dirname "$(find "$WORK/jobs" -name summary.txt -print -quit 2>/dev/null)" 2>/dev/null || true)
fi
echo
if [ -n "$RESULTS" ] && [ -f "$RESULTS/summary.txt" ]; then
    say "summary ($RESULTS/summary.txt):"
    echo
    cat "$RESULTS/summary.txt"
    echo
    say "the job left: $(find "$RESULTS" -maxdepth 1 -type f -printf '%f ')(run with --keep to keep them)"
    if [ -f "$RESULTS/index.html" ]; then
        say "the report page (the URL Zuul gets): $URL"
    fi
else
    say "no summary.txt was written; the daemon's log follows"
    tail -30 "$WORK/turbo-hipster.log"
fi
if [ "$STATUS" -eq 0 ]; then
    say "the job passed"
else
    say "the job did not pass (exit status $STATUS)"
fi
exit "$STATUS"
