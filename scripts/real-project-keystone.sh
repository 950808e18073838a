#!/usr/bin/env bash
# Runs gate_real_db_upgrade the way a user would, on a real project: OpenStack Keystone's
# alembic tree (per-release subfolders, expand and contract heads), as released on PyPI.
#
# The "change" is Keystone's own last migration (742c857f1dfb, two indexes on
# revocation_event); the seed is a Keystone database at the revision before it, on MariaDB and
# on PostgreSQL, with ROWS revocation events (default 1,500,000: ~700 MB of SQL). The job runs
# through `turbo-hipster run-job` with both datasets; the script prints each summary.txt.
#
#   bash scripts/real-project-keystone.sh            # ~15 min here, most of it the MariaDB reload
#   ROWS=100000 bash scripts/real-project-keystone.sh   # a quick look
#   WORK=/var/tmp/th-keystone KEEP=1 ...            # reuse venv, seeds and the job's files
#   FROM_REV=27e647c0fad4 ...   # seeds at Keystone's first alembic revision: the job runs every
#                               # migration since (both branches, ten migrations), not just one
#
# Needs: PyPI access (pip), MariaDB and PostgreSQL as scripts/setup-test-env.sh leaves them.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${ROWS:-1500000}
WORK=${WORK:-/var/tmp/th-keystone}
KEYSTONE=${KEYSTONE_VERSION:-30.0.0}
CHANGE_REV=742c857f1dfb
BASE_REV=e8725d6fa226
say() { printf 'real-project: %s\n' "$*"; }
die() { printf 'real-project: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$WORK"
# The migration tool runs as nobody: everything it reads must be reachable by others.
chmod 755 "$WORK"

# --- 1. Keystone in a venv the contained user can run ----------------------------------------
# Debian's python3, not a pyenv one under /root (nobody could not run it: the job would say
# so before loading the seed).
PY=/usr/bin/python3
[ -x "$PY" ] || die "$PY missing: apt-get install -y python3 python3-venv"
if [ ! -x "$WORK/venv/bin/alembic" ]; then
    say "installing keystone==$KEYSTONE into $WORK/venv (pip, a few minutes)"
    "$PY" -m venv "$WORK/venv" || die "python3 -m venv failed: apt-get install -y python3-venv"
    "$WORK/venv/bin/pip" install -q "keystone==$KEYSTONE" pymysql psycopg2-binary
fi

# --- 2. The project's git repository, with the change on a Zuul ref ---------------------------
SRC=$WORK/src/keystone-$KEYSTONE
UPSTREAM=$WORK/git
if [ ! -d "$UPSTREAM/openstack/keystone" ]; then
    say "making a git repository of keystone-$KEYSTONE's sources, its last migration as the change"
    rm -rf "$WORK/src" "$WORK/sdist"
    "$WORK/venv/bin/pip" download -q --no-deps --no-binary :all: "keystone==$KEYSTONE" -d "$WORK/sdist"
    mkdir -p "$WORK/src"
    tar xzf "$WORK/sdist/keystone-$KEYSTONE.tar.gz" --no-same-owner -C "$WORK/src"
    V=keystone/common/sql/migrations/versions
    CHANGE_FILE=$(cd "$SRC" && find $V -name "${CHANGE_REV}_*.py")
    [ -n "$CHANGE_FILE" ] || die "keystone-$KEYSTONE has no migration $CHANGE_REV"
    git_() { git -C "$SRC" -c user.name=real-project -c user.email=th@localhost "$@"; }
    git_ init -q -b master
    cp "$SRC/$CHANGE_FILE" "$WORK/change.py"
    rm "$SRC/$CHANGE_FILE"
    echo "$BASE_REV" >"$SRC/$V/EXPAND_HEAD"
    git_ add -A
    git_ commit -qm "keystone $KEYSTONE without $CHANGE_REV"
    cp "$WORK/change.py" "$SRC/$CHANGE_FILE"
    echo "$CHANGE_REV" >"$SRC/$V/EXPAND_HEAD"
    git_ add -A
    git_ commit -qm "Add index in revocation_event"
    git_ update-ref refs/zuul/master/Zchange HEAD
    git_ reset -q --hard HEAD~1
    mkdir -p "$UPSTREAM/openstack"
    git clone -q --bare "$SRC" "$UPSTREAM/openstack/keystone"
    git --git-dir="$UPSTREAM/openstack/keystone" fetch -q "$SRC" refs/zuul/master/Zchange:refs/zuul/master/Zchange
fi

# --- 3. Seeds: Keystone's schema at the revision before the change, with data -----------------
FROM_REV=${FROM_REV:-}
DATASETS=$WORK/datasets${FROM_REV:+-from-$FROM_REV}
seed_db=th_keystone_seed_$$
db_sync() { # $1: SQLAlchemy URL; the checkout's keystone (the base) makes the schema
    printf '[database]\nconnection = %s\n' "$1" >"$WORK/keystone.conf"
    if [ -n "$FROM_REV" ]; then
        # Only up to FROM_REV: keystone-manage db_sync no longer takes a version, so Keystone's
        # own alembic config is driven the way db_sync drives it (its migrations read
        # keystone.conf options).
        (cd "$WORK" && PYTHONPATH=$SRC "$WORK/venv/bin/python" -c "
import keystone.conf
from keystone.common import sql
from keystone.common.sql import upgrades
from alembic import command
keystone.conf.configure()
sql.initialize()
keystone.conf.CONF(args=['--config-file', '$WORK/keystone.conf'], project='keystone')
config = upgrades._find_alembic_conf()
with sql.session_for_write() as session:
    engine = session.get_bind()
config.set_main_option('sqlalchemy.url',
                       engine.url.render_as_string(hide_password=False).replace('%', '%%'))
with engine.begin() as conn:
    config.attributes['connection'] = conn
    command.upgrade(config, '$FROM_REV')
" >"$WORK/db_sync.log" 2>&1) || die "upgrade to $FROM_REV failed: $(tail -5 "$WORK/db_sync.log")"
        return
    fi
    (cd "$WORK" && PYTHONPATH=$SRC "$WORK/venv/bin/python" -c \
        "import sys; sys.argv = ['keystone-manage', '--config-file', '$WORK/keystone.conf', 'db_sync']
from keystone.cmd.manage import main; main()" >"$WORK/db_sync.log" 2>&1) ||
        die "keystone-manage db_sync failed: $(tail -5 "$WORK/db_sync.log")"
}
if [ ! -f "$DATASETS/keystone_mariadb/seed.sql.gz" ]; then
    say "MariaDB seed: schema at ${FROM_REV:-$BASE_REV}, $ROWS revocation events"
    git -C "$SRC" checkout -q master
    mysql -uroot -e "DROP DATABASE IF EXISTS $seed_db; CREATE DATABASE $seed_db"
    db_sync "mysql+pymysql://root@127.0.0.1/$seed_db"
    mysql -uroot "$seed_db" -e "INSERT INTO revocation_event (project_id, user_id, issued_before,
        expires_at, revoked_at, audit_id, audit_chain_id)
        SELECT IF(seq % 3 = 0, NULL, md5(seq % 20000)), md5(seq % 200000),
               '2025-01-01' + INTERVAL seq SECOND, '2025-01-02' + INTERVAL seq SECOND,
               '2025-01-01' + INTERVAL seq SECOND, left(to_base64(unhex(md5(seq))), 22),
               left(to_base64(unhex(md5(seq + 7))), 22)
        FROM seq_1_to_$ROWS"
    mkdir -p "$DATASETS/keystone_mariadb"
    mysqldump -uroot --single-transaction "$seed_db" | gzip -1 >"$DATASETS/keystone_mariadb/seed.sql.gz"
    mysql -uroot -e "DROP DATABASE $seed_db"
fi
if [ ! -f "$DATASETS/keystone_postgresql/seed.dump" ]; then
    say "PostgreSQL seed: schema at ${FROM_REV:-$BASE_REV}, $ROWS revocation events"
    psql -U postgres -h 127.0.0.1 -qc "DROP DATABASE IF EXISTS $seed_db" -c "CREATE DATABASE $seed_db"
    db_sync "postgresql+psycopg2://postgres@127.0.0.1/$seed_db"
    psql -U postgres -h 127.0.0.1 -q "$seed_db" -c "INSERT INTO revocation_event (project_id,
        user_id, issued_before, expires_at, revoked_at, audit_id, audit_chain_id)
        SELECT CASE WHEN g % 3 = 0 THEN NULL ELSE md5((g % 20000)::text) END,
               md5((g % 200000)::text), '2025-01-01'::timestamp + g * interval '1 second',
               '2025-01-02'::timestamp + g * interval '1 second',
               '2025-01-01'::timestamp + g * interval '1 second',
               left(encode(decode(md5(g::text), 'hex'), 'base64'), 22),
               left(encode(decode(md5((g + 7)::text), 'hex'), 'base64'), 22)
        FROM generate_series(1, $ROWS) g"
    mkdir -p "$DATASETS/keystone_postgresql"
    pg_dump -U postgres -h 127.0.0.1 -Fc -O -x "$seed_db" >"$DATASETS/keystone_postgresql/seed.dump"
    psql -U postgres -h 127.0.0.1 -qc "DROP DATABASE $seed_db"
fi

# --- 4. The datasets, as an operator writes them -------------------------------------------
for engine in mariadb postgresql; do
    dir=$DATASETS/keystone_$engine
    seed=seed.sql.gz
    [ "$engine" = postgresql ] && seed=seed.dump
    cat >"$dir/alembic.ini.in" <<'INI'
[alembic]
script_location = {checkout}/keystone/common/sql/migrations
version_locations = {checkout}/keystone/common/sql/migrations/versions
recursive_version_locations = true
sqlalchemy.url = {db_url}

[loggers]
keys = root,alembic
[handlers]
keys = console
[formatters]
keys = generic
[logger_root]
level = WARN
handlers = console
qualname =
[logger_alembic]
level = INFO
handlers =
qualname = alembic
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic
[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
INI
    cat >"$dir/config.json" <<JSON
{
    "project": "openstack/keystone",
    "engine": "$engine",
    "database": "keystone",
    "seed_data": "$seed",
    "migration": {
        "tool": ["$WORK/venv/bin/alembic", "-c", "{work_dir}/alembic.ini", "upgrade", "heads"],
        "env": {"PYTHONPATH": "{checkout}"},
        "templates": {"alembic.ini": "alembic.ini.in"},
        "log_format": "alembic"
    },
    "expected_version": {"alembic_heads": "keystone/common/sql/migrations/versions"},
    "maximum_migration_times": {"default": 60},
    "XInnodb_rows_changed": {"default": 1000000},
    "Innodb_rows_read": {"default": 5000000},
    "timeout": 3600
}
JSON
done

# --- 5. The job ---------------------------------------------------------------------------
say "building turbo-hipster and the plugin (cargo build)"
(cd "$REPO" && cargo build -q -p turbo-hipster -p gate_real_db_upgrade)
TARGET=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug
mkdir -p "$WORK/th/plugins/gate_real_db_upgrade" "$WORK/th/jobs" "$WORK/th/git"
cp "$TARGET/libgate_real_db_upgrade.so" "$WORK/th/plugins/gate_real_db_upgrade/libtask.so"
cat >"$WORK/th/config.json" <<JSON
{
    "gearman_servers": ["127.0.0.1:4730"],
    "jobs_working_dir": "$WORK/th/jobs",
    "git_working_dir": "$WORK/th/git",
    "plugin_dirs": ["$WORK/th/plugins"],
    "jobs": [
        {"name": "gate-real-db-upgrade", "plugin": "gate_real_db_upgrade",
         "datasets_dir": "$DATASETS", "max_parallel_datasets": 2}
    ]
}
JSON
"$TARGET/turbo-hipster" -c "$WORK/th/config.json" check-config
say "running the job (both datasets at once)"
set +e
"$TARGET/turbo-hipster" -c "$WORK/th/config.json" run-job gate-real-db-upgrade \
    --param ZUUL_PROJECT=openstack/keystone --param "ZUUL_URL=$UPSTREAM" \
    --param ZUUL_REF=refs/zuul/master/Zchange --param ZUUL_BRANCH=master | tee "$WORK/run-job.out"
status=${PIPESTATUS[0]}
set -e
logs=$(sed -n 's|^logs: file://||p' "$WORK/run-job.out" | tail -n 1)
if [ -n "$logs" ] && [ -f "$logs/summary.txt" ]; then
    echo
    cat "$logs/summary.txt"
    say "logs: $logs"
fi
exit "$status"
