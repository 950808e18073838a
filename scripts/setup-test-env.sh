#!/usr/bin/env bash
# Prepares a Debian 12 machine (run as root) for turbo-hipster's test suite:
#   - Debian packages: gearmand + gearman tools, git, python3 with venv, MariaDB server and
#     client, PostgreSQL server and client, a C toolchain and pkg-config, Chromium (the
#     report page's headless browser test) (only what is missing;
#     `apt-get update` runs once, and only if something has to be installed);
#   - MariaDB running, root logging in with an empty password over 127.0.0.1 and the socket;
#   - PostgreSQL running, trust auth for local and 127.0.0.1, a `root` superuser role;
#   - a Python venv with gear==0.16.0, alembic, sqlalchemy, pymysql, psycopg2-binary and
#     moto's S3 server (`moto[server]`, for the object-storage publishing tests) at
#     ${TH_TEST_VENV:-$HOME/.cache/turbo-hipster/test-venv} (the tests look there too).
# Idempotent, and quick (a few seconds) when everything is already in place.
set -euo pipefail

PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
VENV=${TH_TEST_VENV:-${HOME:-/root}/.cache/turbo-hipster/test-venv}
PY_PACKAGES=(gear==0.16.0 alembic sqlalchemy pymysql psycopg2-binary 'moto[server]>=5,<6')
PY_IMPORTS="import gear, alembic, sqlalchemy, pymysql, psycopg2, moto.server"
WAIT_SECONDS=${TH_SETUP_WAIT_SECONDS:-60}

say() { echo "setup-test-env: $*"; }
die() {
    echo "setup-test-env: error: $*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root; run this script as root"
}

# --- Debian packages -------------------------------------------------------------------

# The Python that makes the venv: Debian's own if it has venv + ensurepip, else the first
# python3 in PATH that has them. Empty if none does.
find_python() {
    local py
    for py in /usr/bin/python3 "$(command -v python3 || true)"; do
        if [ -z "$py" ] || [ ! -x "$py" ]; then
            continue
        fi
        if "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            echo "$py"
            return
        fi
    done
}

postgres_server_installed() {
    have pg_ctlcluster || return 1
    local bin
    for bin in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$bin" ] && return 0
    done
    return 1
}

missing=()
have gearmand || missing+=(gearman-job-server)
have gearadmin || have gearman || missing+=(gearman-tools)
have git || missing+=(git)
[ -n "$(find_python)" ] || missing+=(python3 python3-venv)
have mariadbd || missing+=(mariadb-server)
have mariadb || have mysql || missing+=(mariadb-client)
postgres_server_installed || missing+=(postgresql)
if ! have psql || ! have pg_isready; then missing+=(postgresql-client); fi
if ! have cc || ! have make; then missing+=(build-essential); fi
have pkg-config || missing+=(pkg-config)
# scripts/package-deb.sh (tests/tests/package_deb.rs): dpkg-shlibdeps, strip, objcopy, readelf
have dpkg-shlibdeps || missing+=(dpkg-dev)
if ! have strip || ! have objcopy || ! have readelf; then missing+=(binutils); fi
have chromium || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
    need_root "installing ${missing[*]}"
    say "installing missing packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
else
    say "packages: all present (gearmand, gearman tools, git, python3 venv, MariaDB, PostgreSQL, cc, pkg-config, dpkg-dev, binutils, chromium)"
fi

PYTHON=$(find_python)
[ -n "$PYTHON" ] || die "no python3 with the venv and ensurepip modules, even after installing python3-venv"
MYSQL=$(command -v mariadb || command -v mysql)

# Runs "$@" every second until it succeeds or WAIT_SECONDS pass.
wait_for() {
    local what=$1 waited=0
    shift
    until "$@" >/dev/null 2>&1; do
        waited=$((waited + 1))
        [ "$waited" -le "$WAIT_SECONDS" ] || die "$what did not come up within ${WAIT_SECONDS}s"
        sleep 1
    done
}

# --- MariaDB ---------------------------------------------------------------------------

mariadb_socket_ok() { "$MYSQL" -uroot -e 'select 1'; }
# What the tests do: TCP to 127.0.0.1, user root, empty password, no option files.
mariadb_tcp_ok() {
    "$MYSQL" --no-defaults --protocol=tcp -h127.0.0.1 -P3306 -uroot -e 'select 1'
}

start_mariadb() {
    need_root "starting MariaDB"
    if [ ! -d /var/lib/mysql/mysql ]; then
        say "MariaDB: initialising the data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    if [ -d /run/systemd/system ] && have systemctl; then
        say "MariaDB: systemctl start mariadb"
        systemctl start mariadb
    elif have start-stop-daemon; then
        say "MariaDB: starting /usr/sbin/mariadbd"
        install -d -o mysql -g mysql -m 755 /run/mysqld
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    else
        say "MariaDB: service mariadb start"
        service mariadb start
    fi
}

if mariadb_socket_ok >/dev/null 2>&1 || mariadb_tcp_ok >/dev/null 2>&1; then
    say "MariaDB: running"
else
    start_mariadb
    wait_for "MariaDB" mariadb_socket_ok
    say "MariaDB: started"
fi

if mariadb_tcp_ok >/dev/null 2>&1; then
    say "MariaDB: root logs in over 127.0.0.1 with an empty password"
else
    # Debian's root@localhost authenticates by unix_socket only. Allow an empty password
    # too, for 'localhost' (name resolution on) and '127.0.0.1' (skip-name-resolve).
    "$MYSQL" -uroot <<'SQL'
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    mariadb_tcp_ok >/dev/null 2>&1 || die "MariaDB: root still cannot log in over 127.0.0.1 with an empty password"
    say "MariaDB: allowed root with an empty password over 127.0.0.1"
fi
"$MYSQL" --no-defaults --protocol=tcp -h127.0.0.1 -P3306 -uroot \
    -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null

# --- PostgreSQL ------------------------------------------------------------------------

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }
pg_trust_ok() { psql -w -X -q -U postgres -h 127.0.0.1 -d postgres -c 'select 1'; }
pg_sql() { psql -w -X -q -At -v ON_ERROR_STOP=1 -U postgres -h 127.0.0.1 -d postgres -c "$1"; }

# The newest PostgreSQL version with a cluster config, else the newest installed one.
pg_version() {
    local dir v
    for dir in /etc/postgresql /usr/lib/postgresql; do
        [ -d "$dir" ] || continue
        v=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)
        if [ -n "$v" ]; then
            echo "$v"
            return
        fi
    done
}

if pg_ready; then
    say "PostgreSQL: running"
else
    need_root "starting PostgreSQL"
    PG_VERSION=$(pg_version)
    [ -n "$PG_VERSION" ] || die "PostgreSQL: no installed version found under /usr/lib/postgresql"
    if [ ! -d "/etc/postgresql/$PG_VERSION/main" ]; then
        say "PostgreSQL: creating cluster $PG_VERSION/main"
        pg_createcluster "$PG_VERSION" main >/dev/null
    fi
    say "PostgreSQL: pg_ctlcluster $PG_VERSION main start"
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
    wait_for "PostgreSQL" pg_ready
    say "PostgreSQL: started"
fi

if pg_trust_ok >/dev/null 2>&1; then
    say "PostgreSQL: trust auth over 127.0.0.1"
else
    need_root "configuring PostgreSQL authentication"
    PG_VERSION=$(pg_version)
    HBA=/etc/postgresql/$PG_VERSION/main/pg_hba.conf
    [ -f "$HBA" ] || die "PostgreSQL: $HBA not found"
    # The first matching line wins: put the trust lines first.
    if ! grep -q '^# turbo-hipster test env' "$HBA"; then
        cp -p "$HBA" "$HBA.before-turbo-hipster"
        {
            echo '# turbo-hipster test env: trust local and loopback connections'
            echo 'local   all   all                  trust'
            echo 'host    all   all   127.0.0.1/32   trust'
            echo 'host    all   all   ::1/128        trust'
            cat "$HBA.before-turbo-hipster"
        } > "$HBA"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main reload
    wait_for "PostgreSQL trust auth" pg_trust_ok
    say "PostgreSQL: configured trust auth in $HBA (the original is $HBA.before-turbo-hipster)"
fi

if [ "$(pg_sql "select count(*) from pg_roles where rolname = 'root' and rolsuper")" != 1 ]; then
    if [ "$(pg_sql "select count(*) from pg_roles where rolname = 'root'")" = 1 ]; then
        pg_sql 'alter role root superuser login' >/dev/null
    else
        pg_sql 'create role root superuser login' >/dev/null
    fi
    say "PostgreSQL: made role root a superuser"
else
    say "PostgreSQL: role root is a superuser"
fi
for db in root test; do
    if [ "$(pg_sql "select count(*) from pg_database where datname = '$db'")" != 1 ]; then
        pg_sql "create database $db" >/dev/null
        say "PostgreSQL: created database $db"
    fi
done

# --- Python venv -----------------------------------------------------------------------

venv_ok() {
    "$VENV/bin/python" - <<EOF
import importlib.metadata as m
$PY_IMPORTS
assert m.version("gear") == "0.16.0", m.version("gear")
EOF
}

if [ -x "$VENV/bin/python" ] && venv_ok >/dev/null 2>&1; then
    say "Python venv: $VENV has ${PY_PACKAGES[*]}"
else
    if [ -e "$VENV" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        [ -f "$VENV/pyvenv.cfg" ] || die "$VENV exists but is not a Python venv; remove it or set TH_TEST_VENV"
        say "Python venv: $VENV is broken, recreating it"
        rm -rf "$VENV"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "Python venv: creating $VENV with $PYTHON"
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV"
    fi
    say "Python venv: pip install ${PY_PACKAGES[*]}"
    "$VENV/bin/python" -m pip install -q "${PY_PACKAGES[@]}"
    venv_ok || die "Python venv: the packages do not import after pip install"
    say "Python venv: ready at $VENV"
fi

say "done"
