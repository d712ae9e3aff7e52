#!/usr/bin/env bash
# Run a real ThingsBoard CE (built from source, no Docker) on free loopback ports, for tbspark's
# `realtb` tests, the differential suite and the side-by-side benchmark.
#
#   tools/real-thingsboard.sh up [--json]    start PostgreSQL + ThingsBoard; print TB_URL, TB_MQTT_HOST,
#                                            TB_MQTT_PORT (--json: one JSON object with those keys)
#   tools/real-thingsboard.sh status [--json] what runs; exit 0 only when ThingsBoard answers a login
#   tools/real-thingsboard.sh down           stop everything `up` started, by PID
#   tools/real-thingsboard.sh env            print `export TB_URL=...` lines for a running server
#   tools/real-thingsboard.sh build          explains why it builds nothing (see docs/thingsboard.md)
#
# Input (environment):
#   TB_SOURCE      a ThingsBoard source tree (tag v4.3.1.3) whose server is already built: the script
#                  uses application/target/thingsboard-*-boot.jar and application/target/data
#   TB_JAR, TB_DATA_DIR   or name the boot jar and the install data folder directly
#   TB_STATE_DIR   where the database, logs and PIDs live (default .tbspark/real-thingsboard)
#   TB_HEAP        the JVM's -Xmx (default 2g; measured RSS ~1 GB at rest, see docs/thingsboard.md)
#   TB_START_TIMEOUT_S  how long `up` waits for a login to answer (default 400)
#
# The first `up` initialises a private PostgreSQL cluster (Debian's postgresql-15 binaries, run as the
# `postgres` user when invoked as root) and installs ThingsBoard's schema with the demo tenant
# (tenant@thingsboard.org / tenant); later `up`s reuse both. ThingsBoard runs with the in-memory queue,
# HTTP and MQTT only (CoAP, LwM2M, SNMP, Edge, update checks off), bound to 127.0.0.1.
set -euo pipefail

STATE="${TB_STATE_DIR:-.tbspark/real-thingsboard}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
HEAP="${TB_HEAP:-2g}"
START_TIMEOUT_S="${TB_START_TIMEOUT_S:-400}"
JSON=0
for arg in "$@"; do [ "$arg" = "--json" ] && JSON=1; done

die() { echo "real-thingsboard: $*" >&2; exit "${2:-1}"; }
say() { [ "$JSON" = 1 ] && echo "real-thingsboard: $*" >&2 || echo "real-thingsboard: $*"; }

pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d"; return; }; done
    die "PostgreSQL server binaries not found — apt-get install postgresql (Debian's postgresql-15)" 3
}

# Run a PostgreSQL tool as the cluster's owner: `postgres` when we are root (initdb refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port_free() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

read_pid() { [ -f "$STATE/$1.pid" ] && cat "$STATE/$1.pid" || true; }

# Ports are remembered so that a second `up` keeps TB_URL stable while they are free.
load_ports() {
    PG_PORT=""; HTTP_PORT=""; MQTT_PORT=""
    [ -f "$STATE/ports" ] && . "$STATE/ports"
    for v in PG_PORT HTTP_PORT MQTT_PORT; do
        if [ -z "${!v}" ] || ! port_free "${!v}"; then printf -v "$v" '%s' "$(free_port)"; fi
    done
    printf 'PG_PORT=%s\nHTTP_PORT=%s\nMQTT_PORT=%s\n' "$PG_PORT" "$HTTP_PORT" "$MQTT_PORT" > "$STATE/ports"
}

find_jar() {
    if [ -n "${TB_JAR:-}" ]; then
        [ -f "$TB_JAR" ] || die "TB_JAR=$TB_JAR does not exist"
        JAR="$TB_JAR"
        DATA_DIR="${TB_DATA_DIR:-}"
        [ -n "$DATA_DIR" ] || [ -z "${TB_SOURCE:-}" ] || DATA_DIR="$TB_SOURCE/application/target/data"
    else
        [ -n "${TB_SOURCE:-}" ] || die "set TB_SOURCE to a built ThingsBoard source tree (or TB_JAR and TB_DATA_DIR) — see docs/thingsboard.md" 2
        JAR="$(ls "$TB_SOURCE"/application/target/thingsboard-*-boot.jar 2>/dev/null | head -n 1 || true)"
        [ -n "$JAR" ] || die "no application/target/thingsboard-*-boot.jar under TB_SOURCE=$TB_SOURCE — build the server first (docs/thingsboard.md)" 2
        DATA_DIR="${TB_DATA_DIR:-$TB_SOURCE/application/target/data}"
    fi
    [ -d "${DATA_DIR:-}" ] || die "ThingsBoard's install data folder not found (TB_DATA_DIR): ${DATA_DIR:-unset}" 2
}

login_answers() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
        -d '{"username":"tenant@thingsboard.org","password":"tenant"}' \
        "http://127.0.0.1:$1/api/auth/login" 2>/dev/null | grep -q '^200$'
}

start_postgres() {
    local bin; bin="$(pg_bin)"
    local pgdata="$STATE/pgdata" sock="$STATE/pgsock"
    mkdir -p "$sock"
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        say "initialising a private PostgreSQL cluster in $pgdata"
        mkdir -p "$pgdata"
        [ "$(id -u)" = 0 ] && chown postgres: "$pgdata" "$sock"
        chmod 700 "$pgdata"
        local pwfile; pwfile="$(mktemp)"; echo postgres > "$pwfile"; chmod 644 "$pwfile"
        as_pg "$bin/initdb" -D "$pgdata" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" >"$STATE/initdb.log" 2>&1 \
            || { rm -f "$pwfile"; die "initdb failed — see $STATE/initdb.log"; }
        rm -f "$pwfile"
    fi
    [ "$(id -u)" = 0 ] && chown postgres: "$sock"
    if ! as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
            -o "-p $PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=256MB" start >/dev/null \
            || die "PostgreSQL did not start — see $pgdata/server.log"
    else
        # already running (an interrupted `up`): keep its port
        PG_PORT="$(as_pg sed -n 4p "$pgdata/postmaster.pid")"
        sed -i "s/^PG_PORT=.*/PG_PORT=$PG_PORT/" "$STATE/ports"
    fi
    head -n 1 "$pgdata/postmaster.pid" > "$STATE/postgres.pid"
    if ! PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname='thingsboard'" | grep -q 1; then
        PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE thingsboard" \
            || die "could not create the thingsboard database"
    fi
}

tb_env() {
    export SPRING_DATASOURCE_URL="jdbc:postgresql://127.0.0.1:$PG_PORT/thingsboard"
    export SPRING_DATASOURCE_USERNAME=postgres SPRING_DATASOURCE_PASSWORD=postgres
    export TB_QUEUE_TYPE=in-memory
    export HTTP_BIND_ADDRESS=127.0.0.1 HTTP_BIND_PORT="$HTTP_PORT"
    export MQTT_BIND_ADDRESS=127.0.0.1 MQTT_BIND_PORT="$MQTT_PORT"
    export COAP_ENABLED=false COAP_SERVER_ENABLED=false LWM2M_ENABLED=false SNMP_ENABLED=false
    export EDGES_ENABLED=false UPDATES_ENABLED=false USAGE_STATS_REPORT_ENABLED=false
    export SQL_DATA_FOLDER="$STATE/sqldata"
}

install_schema() {
    [ -f "$STATE/installed" ] && return 0
    say "installing ThingsBoard's schema, system data and demo tenant (about 90 s)"
    local t0=$SECONDS
    tb_env
    java -Xmx1g -cp "$JAR" -Dloader.main=org.thingsboard.server.ThingsboardInstallApplication \
        -Dinstall.data_dir="$DATA_DIR" -Dinstall.load_demo=true -Dspring.jpa.hibernate.ddl-auto=none \
        -Dinstall.upgrade=false \
        org.springframework.boot.loader.launch.PropertiesLauncher >"$STATE/install.log" 2>&1 || {
        # a half-installed schema would make the next attempt fail too: start it from nothing
        PGPASSWORD=postgres psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "DROP DATABASE IF EXISTS thingsboard" || true
        die "schema install failed — see $STATE/install.log"; }
    echo "$((SECONDS - t0))" > "$STATE/installed"
    say "schema installed in $((SECONDS - t0)) s"
}

print_env() {
    if [ "$JSON" = 1 ]; then
        printf '{"TB_URL": "http://127.0.0.1:%s", "TB_MQTT_HOST": "127.0.0.1", "TB_MQTT_PORT": %s}\n' "$HTTP_PORT" "$MQTT_PORT"
    else
        printf 'export TB_URL=http://127.0.0.1:%s\nexport TB_MQTT_HOST=127.0.0.1\nexport TB_MQTT_PORT=%s\n' "$HTTP_PORT" "$MQTT_PORT"
    fi
}

cmd_up() {
    command -v java >/dev/null || die "java not found — apt-get install openjdk-17-jdk-headless" 3
    find_jar
    local pid; pid="$(read_pid thingsboard)"
    if alive "$pid"; then
        . "$STATE/ports"
        login_answers "$HTTP_PORT" || die "ThingsBoard (pid $pid) is starting or unhealthy — see $STATE/thingsboard.log; 'down' then 'up' to restart" 3
        say "already running (pid $pid)"
        print_env; return 0
    fi
    load_ports
    start_postgres
    install_schema
    tb_env
    local t0=$SECONDS
    say "starting ThingsBoard on http://127.0.0.1:$HTTP_PORT, MQTT 127.0.0.1:$MQTT_PORT"
    # setsid: its own process group, so `down` stops the JVM and nothing else
    setsid java -Xmx"$HEAP" -Xss512k -XX:+UseG1GC -jar "$JAR" >"$STATE/thingsboard.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$STATE/thingsboard.pid"
    while ! login_answers "$HTTP_PORT"; do
        alive "$pid" || die "ThingsBoard exited during start — see $STATE/thingsboard.log" 3
        [ $((SECONDS - t0)) -lt "$START_TIMEOUT_S" ] || die "ThingsBoard did not answer a login within ${START_TIMEOUT_S} s — see $STATE/thingsboard.log" 3
        # readiness is the login call itself; this only spaces the attempts
        sleep 2
    done
    echo "$((SECONDS - t0))" > "$STATE/last-start-s"
    say "ThingsBoard answers a login after $((SECONDS - t0)) s (pid $pid)"
    print_env > "$STATE/tb.env.tmp" && mv "$STATE/tb.env.tmp" "$STATE/$([ "$JSON" = 1 ] && echo tb.json || echo tb.env)"
    print_env
}

stop_pid() {  # stop_pid NAME PID: SIGTERM, wait up to 60 s, then SIGKILL
    local name=$1 pid=$2 i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do alive "$pid" || { say "$name stopped (pid $pid)"; return 0; }; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    say "$name killed after 60 s (pid $pid)"
}

cmd_down() {
    stop_pid thingsboard "$(read_pid thingsboard)"
    rm -f "$STATE/thingsboard.pid"
    local bin; bin="$(pg_bin)"
    if [ -f "$STATE/pgdata/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$STATE/pgdata" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$STATE/pgdata" -m fast -w stop >/dev/null && say "PostgreSQL stopped"
    fi
    rm -f "$STATE/postgres.pid"
}

cmd_status() {
    local pid pg up=0
    pid="$(read_pid thingsboard)"; pg="$(read_pid postgres)"
    [ -f "$STATE/ports" ] && . "$STATE/ports"
    if alive "$pid" && login_answers "${HTTP_PORT:-0}"; then up=1; fi
    if [ "$JSON" = 1 ]; then
        printf '{"up": %s, "thingsboard_pid": %s, "postgres_pid": %s, "TB_URL": "http://127.0.0.1:%s", "TB_MQTT_HOST": "127.0.0.1", "TB_MQTT_PORT": %s}\n' \
            "$([ $up = 1 ] && echo true || echo false)" "${pid:-null}" "${pg:-null}" "${HTTP_PORT:-0}" "${MQTT_PORT:-0}"
    else
        echo "thingsboard: $( [ $up = 1 ] && echo "up (pid $pid) http://127.0.0.1:$HTTP_PORT mqtt 127.0.0.1:$MQTT_PORT" || echo down)"
        echo "postgres:    $(alive "$pg" && echo "up (pid $pg) port $PG_PORT" || echo down)"
    fi
    [ $up = 1 ]
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) . "$STATE/ports" 2>/dev/null || die "nothing started under $STATE"; alive "$(read_pid thingsboard)" || die "ThingsBoard is not running" 3; print_env ;;
    build) die "building ThingsBoard is not scripted in this repository: build its server from a v4.3.1.3 source tree as docs/thingsboard.md describes, then set TB_SOURCE" 2 ;;
    *) echo "usage: $0 up|down|status|env [--json]" >&2; exit 2 ;;
esac
