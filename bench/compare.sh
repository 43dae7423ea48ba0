#!/usr/bin/env bash
# bench/compare.sh — settlement throughput against its ceilings, in one run on one machine.
#
#   1. SQLite:     settlements/s (loadgen, settlement mix) ÷ ping rps (loadgen --only ping)
#   2. PostgreSQL: settlements/s ÷ ping rps, and settlements/s ÷ pgbench tps (tpcb-like)
#   3. Rules:      settlements/s with the default wasm plugin ÷ with the native rules (SQLite)
#   4. Plugins:    server RSS under the settlement load with BENCH_PLATFORMS platforms, each
#                  with its own plugin (the default one, made distinct by a custom section)
#   5. `cargo bench -p carbon-engine --bench settle`, when engine/benches/settle.rs exists
#
# Every server runs on a fresh database (a new SQLite file, a new PostgreSQL database made
# with createdb and dropped afterwards). Any failing step stops the script with a message
# naming it; servers and databases it made are cleaned up on every exit.
#
# Environment (defaults in brackets):
#   BENCH_SECS [20]           seconds of each loadgen run
#   PGBENCH_SECS [BENCH_SECS] seconds of the pgbench run
#   BENCH_CONNECTIONS [64]    loadgen connections (and pgbench clients)
#   BENCH_PEOPLE [1000]       loadgen people
#   BENCH_MIX [purchase=100]  loadgen's settlement mix
#   BENCH_PG_HOST [127.0.0.1], BENCH_PG_PORT [5432], BENCH_PG_USER [postgres]
#   BENCH_PLATFORMS [100]     platforms with their own plugin in the RSS step
#   BENCH_SKIP                space-separated steps to skip: sqlite postgres pgbench wasm plugins criterion
#   CARGO_TARGET_DIR          where cargo builds (default: the workspace's target/)
#
# Run from anywhere: bench/compare.sh    (see docs/BENCHMARKS.md)

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_SECS=${BENCH_SECS:-20}
PGBENCH_SECS=${PGBENCH_SECS:-$BENCH_SECS}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
PEOPLE=${BENCH_PEOPLE:-1000}
MIX=${BENCH_MIX:-purchase=100}
PLATFORMS=${BENCH_PLATFORMS:-100}
PG_HOST=${BENCH_PG_HOST:-127.0.0.1}
PG_PORT=${BENCH_PG_PORT:-5432}
PG_USER=${BENCH_PG_USER:-postgres}
SKIP=" ${BENCH_SKIP:-} "
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
PLUGIN=$TARGET/wasm-plugins/wasm32-wasip2/release/default_rules.wasm
ADMIN_TOKEN="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/carbon-bench.XXXXXX")

SERVER_PID=""
DATABASES=()
STEP="setup"

fail() {
    echo "compare.sh: FAILED at step '$STEP': $*" >&2
    exit 1
}

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

cleanup() {
    local status=$?
    stop_server
    for db in "${DATABASES[@]}"; do
        dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists "$db" 2>/dev/null \
            || echo "compare.sh: could not drop database $db" >&2
    done
    if [[ $status -eq 0 ]]; then
        rm -rf "$WORK"
    else
        echo "compare.sh: logs and outputs kept in $WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skipped() { [[ "$SKIP" == *" $1 "* ]]; }

step() {
    STEP=$1
    echo
    echo "== $1"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME DATABASE_URL: a carbon-host serve on a free port; sets URL.
start_server() {
    local name=$1 database_url=$2 port
    port=$(free_port)
    URL="http://127.0.0.1:$port"
    # From $WORK, so no carbon-host.toml of the caller's directory is read. RUST_LOG=warn: the
    # default `info` writes a line per request, which would be measured too.
    (cd "$WORK" && CARBON_ADMIN_TOKEN="$ADMIN_TOKEN" CARBON_DATABASE_URL="$database_url" \
        CARBON_LISTEN="127.0.0.1:$port" RUST_LOG=warn exec "$BIN/carbon-host" serve) \
        >"$WORK/server-$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        if curl -fsS "$URL/readyz" >/dev/null 2>&1; then
            echo "carbon-host ($name) ready at $URL on $database_url"
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$WORK/server-$name.log" >&2; fail "carbon-host ($name) exited"; }
        sleep 0.1
    done
    tail -20 "$WORK/server-$name.log" >&2
    fail "carbon-host ($name) not ready after 60 s"
}

# loadgen NAME ARGS…: runs loadgen against $URL, output in $WORK/NAME.out; fails on non-zero exit.
loadgen() {
    local name=$1
    shift
    echo "-- loadgen $name: $*"
    if ! "$BIN/loadgen" --url "$URL" --admin-token "$ADMIN_TOKEN" --connections "$CONNECTIONS" \
        --people "$PEOPLE" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; then
        cat "$WORK/$name.out" >&2
        tail -20 "$WORK/$name.err" >&2
        fail "loadgen $name exited non-zero (server log: $WORK/server-*.log)"
    fi
    grep -v '^RESULT op=' "$WORK/$name.out" | sed -n '/^== load/,$p'
}

# result FILE OP FIELD: a field of loadgen's `RESULT op=OP` line (0 when the op did not run).
result() {
    local value
    value=$(grep "^RESULT op=$2 " "$WORK/$1.out" | tr ' ' '\n' | sed -n "s/^$3=//p")
    echo "${value:-0}"
}

# settlements/s of a loadgen output: purchases + refunds answered 200, per second.
settle_rps() {
    awk -v a="$(result "$1" purchase ok_rps)" -v b="$(result "$1" refund ok_rps)" 'BEGIN { printf "%.1f", a + b }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'
}

SUMMARY=()
summary() {
    SUMMARY+=("$1")
    echo ">> $1"
}

step "machine"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "BENCH_SECS=$BENCH_SECS PGBENCH_SECS=$PGBENCH_SECS BENCH_CONNECTIONS=$CONNECTIONS BENCH_PEOPLE=$PEOPLE BENCH_MIX=$MIX"
git -C "$ROOT" log -1 --format='commit: %h %s' 2>/dev/null || true

step "build"
(cd "$ROOT" && cargo build --release -p carbon-host -p loadgen -p rules-bench) || fail "cargo build --release"
if ! skipped wasm; then
    # As tests/build.rs does: the plugins are their own workspace, built for wasm32-wasip2.
    (cd "$ROOT/plugins" && CARGO_TARGET_DIR="$TARGET/wasm-plugins" cargo build --release --target wasm32-wasip2) \
        || fail "building the plugins for wasm32-wasip2"
    [[ -f "$PLUGIN" ]] || fail "no $PLUGIN after building the plugins"
fi

SQLITE_SETTLE=""
if ! skipped sqlite; then
    step "sqlite"
    start_server sqlite "sqlite://$WORK/sqlite.db"
    loadgen sqlite-settle --mix "$MIX" --duration "$BENCH_SECS"
    loadgen sqlite-ping --only ping --duration "$BENCH_SECS"
    stop_server
    SQLITE_SETTLE=$(settle_rps sqlite-settle)
    ping=$(result sqlite-ping ping ok_rps)
    summary "SQLite: settlements/s $SQLITE_SETTLE ÷ ping rps $ping = $(ratio "$SQLITE_SETTLE" "$ping")"
fi

if ! skipped postgres; then
    step "postgres"
    pg_isready -h "$PG_HOST" -p "$PG_PORT" >/dev/null || fail "PostgreSQL not reachable at $PG_HOST:$PG_PORT"
    db="carbon_bench_$$"
    createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$db" || fail "createdb $db"
    DATABASES+=("$db")
    start_server postgres "postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
    loadgen pg-settle --mix "$MIX" --duration "$BENCH_SECS"
    loadgen pg-ping --only ping --duration "$BENCH_SECS"
    stop_server
    pg_settle=$(settle_rps pg-settle)
    ping=$(result pg-ping ping ok_rps)
    summary "PostgreSQL: settlements/s $pg_settle ÷ ping rps $ping = $(ratio "$pg_settle" "$ping")"

    if ! skipped pgbench; then
        step "pgbench"
        db="carbon_pgbench_$$"
        createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$db" || fail "createdb $db"
        DATABASES+=("$db")
        pgbench -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -i -s 1 -q "$db" >"$WORK/pgbench-init.log" 2>&1 \
            || { cat "$WORK/pgbench-init.log" >&2; fail "pgbench -i"; }
        pgbench -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -c "$CONNECTIONS" -j 2 -T "$PGBENCH_SECS" -M prepared "$db" \
            >"$WORK/pgbench.log" 2>&1 || { cat "$WORK/pgbench.log" >&2; fail "pgbench"; }
        grep -E '^(number of clients|latency average|tps)' "$WORK/pgbench.log"
        tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.log" | head -1)
        [[ -n "$tps" ]] || fail "no tps in the pgbench output"
        summary "PostgreSQL: settlements/s $pg_settle ÷ pgbench tpcb-like tps $tps = $(ratio "$pg_settle" "$tps")"
    fi
fi

if ! skipped wasm; then
    step "wasm vs native (SQLite)"
    if [[ -z "$SQLITE_SETTLE" ]]; then
        start_server native "sqlite://$WORK/native.db"
        loadgen sqlite-settle --mix "$MIX" --duration "$BENCH_SECS"
        stop_server
        SQLITE_SETTLE=$(settle_rps sqlite-settle)
    fi
    # A fresh database, as the native run had.
    start_server wasm "sqlite://$WORK/wasm.db"
    loadgen sqlite-wasm --mix "$MIX" --duration "$BENCH_SECS" --plugin "$PLUGIN"
    stop_server
    wasm=$(settle_rps sqlite-wasm)
    summary "Rules: settlements/s with the default wasm plugin $wasm ÷ native $SQLITE_SETTLE = $(ratio "$wasm" "$SQLITE_SETTLE")"
    echo "-- rules-bench (in-process, no HTTP)"
    (cd "$ROOT" && "$BIN/rules-bench" "$PLUGIN") || fail "rules-bench"
fi

if ! skipped wasm && ! skipped plugins; then
    step "plugins: RSS with $PLATFORMS platforms' plugins (SQLite)"
    db="sqlite://$WORK/plugins.db"
    started=$(date +%s)
    for i in $(seq 1 "$PLATFORMS"); do
        app=$(cd "$WORK" && CARBON_DATABASE_URL="$db" "$BIN/carbon-host" platform add --name "Mall $i") \
            || fail "platform add $i"
        # A distinct component per platform, so each is compiled and loaded on its own: the
        # default plugin plus a 14-byte custom section (id 0, name "bench-copy", 3 digits).
        copy="$WORK/plugin-$i.wasm"
        { cat "$PLUGIN"; printf '\x00\x0e\x0abench-copy%03d' "$((i % 1000))"; } >"$copy"
        (cd "$WORK" && CARBON_DATABASE_URL="$db" "$BIN/carbon-host" plugin install --platform "$app" "$copy" \
            --activate >/dev/null) || fail "plugin install for platform $i"
    done
    echo "$PLATFORMS platforms with their own plugin installed in $(($(date +%s) - started)) s"
    start_server plugins "$db"
    rss_kib() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$SERVER_PID/status"; }
    echo "server RSS at start: $(($(rss_kib VmRSS) / 1024)) MiB"
    loadgen sqlite-plugins --mix "$MIX" --duration "$BENCH_SECS" --plugin "$PLUGIN"
    peak=$(($(rss_kib VmHWM) / 1024))
    now=$(($(rss_kib VmRSS) / 1024))
    stop_server
    summary "Plugins: server peak RSS $peak MiB (now $now MiB) with $((PLATFORMS + 1)) platforms' plugins, settlements/s $(settle_rps sqlite-plugins)"
fi

if ! skipped criterion; then
    step "criterion"
    if [[ -f "$ROOT/engine/benches/settle.rs" ]]; then
        (cd "$ROOT" && cargo bench -p carbon-engine --bench settle) || fail "cargo bench -p carbon-engine --bench settle"
    else
        echo "engine/benches/settle.rs does not exist: skipped"
    fi
fi

STEP="summary"
echo
echo "== summary ($(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg))"
for line in "${SUMMARY[@]}"; do
    echo "$line"
done
