# Shared helpers for scripts/demo, scripts/test and scripts/bench. Source it; do not run it.
# Everything here installs what is missing (Debian packages, a Python venv) and starts throwaway
# services that stop when the calling script exits.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Where cargo puts what it builds (CARGO_TARGET_DIR when set).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/dialback
VENV=$CACHE_DIR/venv

# log MESSAGE: a step, with the seconds since the script started (which step took how long).
log() { printf '\033[1m==> [%4d s] %s\033[0m\n' "$SECONDS" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root (directly when we are root, else through sudo).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
# apt_install PKG...: installs the Debian packages that are not installed yet.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [ "$APT_UPDATED" -eq 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  echo "$dir"
}

ensure_postgres() {
  apt_install postgresql
}

# The Python tools, pinned: schemathesis (API contract fuzzing), pyftpdlib (FTP server; pyOpenSSL
# gives it explicit FTPS), openapi-spec-validator (the spec is valid OpenAPI 3.0) and
# openapi-python-client (a client generated from the spec builds and reads the examples),
# standardwebhooks (the specification's own library: the tests' webhook receiver verifies with it),
# openapi-generator-cli (its jar generates the courier app's Kotlin client; needs a JRE).
PYTHON_TOOLS=("schemathesis==4.32.5" "pyftpdlib==2.2.0" "pyopenssl==26.4.0" "openapi-spec-validator==0.9.0"
  "openapi-python-client==0.29.1" "standardwebhooks==1.1.0" "openapi-generator-cli==7.26.0")
PYTHON_TOOLS_STAMP="${PYTHON_TOOLS[*]}"

# ensure_venv: a Python venv in $VENV with exactly PYTHON_TOOLS (made again when the pins change).
ensure_venv() {
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.tools" 2>/dev/null)" = "$PYTHON_TOOLS_STAMP" ]; then
    return 0
  fi
  log "creating Python venv in $VENV (${PYTHON_TOOLS[*]})"
  apt_install python3-venv 2>/dev/null || true
  mkdir -p "$CACHE_DIR"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PYTHON_TOOLS[@]}"
  printf '%s' "$PYTHON_TOOLS_STAMP" >"$VENV/.tools"
}

# ensure_axe: axe-core, the accessibility checker the browser test runs in Chromium, as
# $CACHE_DIR/axe/axe.min.js. PyPI's axe-playwright-python ships it; only that file is taken (pip
# download, no install, none of its dependencies).
AXE_PACKAGE=axe-playwright-python==0.1.8
AXE_JS=$CACHE_DIR/axe/axe.min.js
ensure_axe() {
  if [ -s "$AXE_JS" ] && [ "$(cat "$CACHE_DIR/axe/.package" 2>/dev/null)" = "$AXE_PACKAGE" ]; then
    return 0
  fi
  ensure_venv
  log "fetching axe-core (from $AXE_PACKAGE) into $CACHE_DIR/axe"
  local tmp
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --dest "$tmp" "$AXE_PACKAGE"
  mkdir -p "$CACHE_DIR/axe"
  "$VENV/bin/python" - "$tmp"/*.whl "$AXE_JS" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith("/axe.min.js"))
    open(sys.argv[2], "wb").write(wheel.read(name))
PY
  rm -rf "$tmp"
  printf '%s' "$AXE_PACKAGE" >"$CACHE_DIR/axe/.package"
}

# ensure_s3_server: s3s-fs, an S3-compatible server on a directory (crates.io, pinned), in
# $CACHE_DIR/s3s/bin: the object store the recordings tests keep recordings in. Built once.
S3S_FS_VERSION=0.14.1
S3S_FS=$CACHE_DIR/s3s/bin/s3s-fs
ensure_s3_server() {
  if [ -x "$S3S_FS" ] && [ "$(cat "$CACHE_DIR/s3s/.version" 2>/dev/null)" = "$S3S_FS_VERSION" ]; then
    return 0
  fi
  log "building s3s-fs $S3S_FS_VERSION (an S3-compatible server for the tests) into $CACHE_DIR/s3s"
  CARGO_TARGET_DIR="$CACHE_DIR/s3s/target" cargo install --quiet --locked --features binary \
    --version "$S3S_FS_VERSION" --root "$CACHE_DIR/s3s" s3s-fs
  rm -rf "$CACHE_DIR/s3s/target"
  printf '%s' "$S3S_FS_VERSION" >"$CACHE_DIR/s3s/.version"
}

# start_ftp ROOT PORT LOG: the FTP server of tests/fixtures/ftp_server.py (read-only user
# `recordings`/`recordings` chrooted to ROOT) on 127.0.0.1:PORT, in the background; sets FTP_PID.
start_ftp() {
  "$VENV/bin/python" "$ROOT/tests/fixtures/ftp_server.py" --root "$1" --port "$2" >"$3" 2>&1 &
  FTP_PID=$!
}

# release_of COMMIT: the path of COMMIT's dialback binary (release), built once into
# $CACHE_DIR/rolling (a worktree per commit, one target directory for all: about 10 minutes on 2
# cores the first time) and kept there. Progress goes to stderr.
release_of() {
  local commit tree
  commit=$(git -C "$ROOT" rev-parse --short "$1^{commit}") || die "no commit $1"
  tree=$CACHE_DIR/rolling/$commit
  if [ ! -x "$tree.dialback" ]; then
    mkdir -p "$CACHE_DIR/rolling"
    [ -d "$tree" ] || git -C "$ROOT" worktree add --detach "$tree" "$commit" >/dev/null
    log "building (release) $commit: dialback"
    (cd "$tree" && CARGO_TARGET_DIR=$CACHE_DIR/rolling/target cargo build --release --locked --bin dialback >&2)
    cp "$CACHE_DIR/rolling/target/release/dialback" "$tree.dialback"
  fi
  echo "$tree.dialback"
}

# free_port NAME...: sets each NAME to a port nothing listens on now and that this script has not
# handed out before. Ports are drawn before the servers that take them start, and the kernel may
# offer the same free port twice: a bench once gave PostgreSQL's port to dialback as well.
GIVEN_PORTS=" "
free_port() {
  local name port
  for name in "$@"; do
    port=
    while [ -z "$port" ] || [[ $GIVEN_PORTS == *" $port "* ]]; do
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
    done
    GIVEN_PORTS+="$port "
    printf -v "$name" '%s' "$port"
  done
}

# as_postgres CMD...: runs CMD as the postgres OS user when we are root (PostgreSQL refuses root).
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres DIR PORT: a throwaway cluster owned by the postgres OS user (PostgreSQL refuses
# to run as root), trust auth on 127.0.0.1 only, fsync off; PG_EXTRA_OPTS adds server options (e.g.
# "-c shared_preload_libraries=pg_stat_statements" to profile). Sets PG_DIR for stop_postgres.
start_postgres() {
  PG_DIR=$1
  PG_PORT_RUNNING=$2
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_DIR"; chmod 700 "$PG_DIR"; fi
  as_postgres "$(pg_bindir)/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  pg_ctl_with_options start off
}

# restart_postgres_durable: the same cluster again, with fsync, synchronous commit and full-page
# writes on (PostgreSQL's defaults, what a production server runs): every commit waits for its WAL
# to reach the disk.
restart_postgres_durable() {
  pg_ctl_with_options restart on
}

# pg_ctl_with_options start|restart on|off: runs pg_ctl on $PG_DIR with the server options.
pg_ctl_with_options() {
  as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 -m fast \
    -o "-p $PG_PORT_RUNNING -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=$2 -c synchronous_commit=$2 -c full_page_writes=$2 -c max_connections=300 ${PG_EXTRA_OPTS:-}" \
    "$1" >/dev/null || { cat "$PG_DIR/postgres.log" >&2; die "PostgreSQL did not $1"; }
}

# postgres_tls DIR: certificates for a cluster that speaks TLS (a CA, the server's certificate for
# 127.0.0.1 and localhost signed by it, and another CA that did not sign it), and PG_EXTRA_OPTS that
# turn TLS on with them; start_postgres then starts it so. Exports DIALBACK_TEST_PG_CA and
# DIALBACK_TEST_PG_OTHER_CA (the tests connect with sslmode=verify-full against each).
postgres_tls() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir"
    for ca in ca other-ca; do
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=dialback test $ca" -keyout "$ca.key" -out "$ca.pem" 2>/dev/null
    done
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
  ) || die "could not make the test certificates (openssl)"
  chmod 600 "$dir/server.key"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/server.key" "$dir/server.crt"; fi
  chmod 755 "$dir"
  PG_EXTRA_OPTS="${PG_EXTRA_OPTS:-} -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
  export DIALBACK_TEST_PG_CA=$dir/ca.pem DIALBACK_TEST_PG_OTHER_CA=$dir/other-ca.pem
}

stop_postgres() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] || return 0
  as_postgres "$(pg_bindir)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}

# wait_http URL SECONDS [PID]: waits until URL answers 2xx; with PID, fails as soon as that process
# has exited (so a stale process holding the port is never taken for the one just started).
wait_http() {
  local url=$1 deadline=$((SECONDS + $2)) pid=${3:-}
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
  [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null
}

# wait_port HOST PORT SECONDS [PID]: waits until a TCP port accepts connections (with PID, as
# wait_http does).
wait_port() {
  local deadline=$((SECONDS + $3)) pid=${4:-}
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
  [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null
}

# require_free_port HOST PORT WHAT: stops with a clear message when something already listens there
# (a demo left running, say), instead of starting a second copy that cannot bind.
require_free_port() {
  if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then
    die "$1:$2 ($3) is already in use: stop what listens there (\`ss -ltnp 'sport = :$2'\` shows it) or pick another port"
  fi
}

# random_hex BYTES: BYTES random bytes as hex (fails loudly, unlike a substitution inside export).
random_hex() {
  python3 -c "import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))" "$1"
}
