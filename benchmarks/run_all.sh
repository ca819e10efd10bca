#!/usr/bin/env bash
# Every figure of docs/benchmarks.md in one command, each beside its anchor measured
# in the same run. Run it from anywhere, alone on the machine (about 25 minutes):
#
#     bash benchmarks/run_all.sh [RESULTS_DIR]
#
# Raw outputs, one file per part, go to RESULTS_DIR (default
# /tmp/guild-bench-results/<UTC timestamp>/); summary.md there holds every table
# with its ratios to the anchors, the machine, the commit and how long each part
# took (timings.tsv). A part that fails is reported in summary.md and the rest
# still run; the exit status is non-zero if any part failed.
#
# Parts (PARTS="throughput startup sandbox huey bullmq peers" to choose):
#   throughput  3 rounds of: bare-Trio channel anchor, then bench_throughput.py on
#               memory (concurrency 64 and 16, the anchor's), sqlite NORMAL,
#               sqlite FULL, sqlite at guild's default durability, redis
#   startup     bench_startup.py (import, spawn -> first job, sqlite and redis)
#   sandbox     bench_sandbox.py
#   huey        bench_vs_huey.py: SQLite one-job-per-call enqueue and drain against
#               Huey's SqliteHuey at NORMAL and FULL (and guild's default beside
#               Huey's FULL), guild --processes 1 and 2; and the enqueue by
#               HUEY_CALLERS concurrent callers (Huey's threads, guild's Trio tasks)
#   sqlite      bench_sqlite_drain.py: drain decay from a 10k to a 500k backlog, and
#               guild run --processes 2 against 1 (50k jobs, start-up included)
#   bullmq      the shared BullMQ harness (BullMQ beside guild, 3 interleaved reps)
#   peers       the shared peer harness: guild, guild --processes 2, dramatiq, saq,
#               arq, rq (and the harness's own streaq-trio row), 3 reps
#
# Inputs (the script stops with a message if one is missing):
#   GUILD_SHARED_BENCH  the shared harnesses (default /work/shared/bench): peers/,
#                       bullmq/, embedded/bare_trio.py
#   PEERS_STATE         the peer harness's venvs (default /tmp/guild-peerbench; the
#                       harness makes them from its pinned requirements if missing)
#   BULLMQ_DIR          node_modules with bullmq 6 + ioredis (default /tmp/bullmq-bench;
#                       npm-installed if missing)
#   HUEY_PYTHON         an interpreter with huey (default /tmp/huey-venv/bin/python;
#                       made with pip if missing)
# Sizes (defaults fit the ~25 minutes): THROUGHPUT_N=50000 THROUGHPUT_ROUNDS=3
# STARTUP_N=20 SANDBOX_N=300 HUEY_N=5000 HUEY_ROUNDS=3 HUEY_WORKERS=2,8 HUEY_CALLERS=1,16
# HUEY_GUILD_ENQUEUE=trio (or sync: guild.Client; the huey part also runs the other one,
# enqueue only, into huey-<other>.json) PEERS_N=10000 PEERS_REPS=3
# SQLITE_ROUNDS=3 SQLITE_LARGE=500000 SQLITE_FLEET_N=50000
# PEERS_LIST=guild,dramatiq,saq,arq,rq.
# BASELINE_TREE=/tmp/guild-old (a folder holding an older guild package, e.g. from
#   `git archive 1a908a6 | tar -x -C /tmp/guild-old`): throughput and start-up also run
#   that code (PYTHONPATH), alternating with this one; rows marked @base / tree "base".
# Extra start-up trees: STARTUP_TREES="name=/path ...".
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
SHARED=${GUILD_SHARED_BENCH:-/work/shared/bench}
RES=${1:-/tmp/guild-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
PARTS=${PARTS:-throughput startup sandbox huey sqlite bullmq peers}
THROUGHPUT_N=${THROUGHPUT_N:-50000}
THROUGHPUT_ROUNDS=${THROUGHPUT_ROUNDS:-3}
STARTUP_N=${STARTUP_N:-20}
SANDBOX_N=${SANDBOX_N:-300}
HUEY_N=${HUEY_N:-5000}
HUEY_ROUNDS=${HUEY_ROUNDS:-3}
HUEY_WORKERS=${HUEY_WORKERS:-2,8}
HUEY_CALLERS=${HUEY_CALLERS:-1,16}
HUEY_GUILD_ENQUEUE=${HUEY_GUILD_ENQUEUE:-trio}
if [ "$HUEY_GUILD_ENQUEUE" = sync ]; then HUEY_OTHER_ENQUEUE=trio; else HUEY_OTHER_ENQUEUE=sync; fi
SQLITE_ROUNDS=${SQLITE_ROUNDS:-3}
SQLITE_SMALL=${SQLITE_SMALL:-10000}
SQLITE_LARGE=${SQLITE_LARGE:-500000}
SQLITE_FLEET_N=${SQLITE_FLEET_N:-50000}
PEERS_N=${PEERS_N:-10000}
PEERS_REPS=${PEERS_REPS:-3}
PEERS_LIST=${PEERS_LIST:-guild,dramatiq,saq,arq,rq}
PEERS_STATE=${PEERS_STATE:-/tmp/guild-peerbench}
BULLMQ_DIR=${BULLMQ_DIR:-/tmp/bullmq-bench}
HUEY_PYTHON=${HUEY_PYTHON:-/tmp/huey-venv/bin/python}
export PEERS_STATE BULLMQ_DIR HUEY_PYTHON

die() { echo "run_all.sh: $*" >&2; exit 2; }
want() { [[ " $PARTS " == *" $1 "* ]]; }

# ------------------------------------------------------------------ preflight
[ -x "$PY" ] || die "no $PY: make the project's venv first"
[ -d "$SHARED" ] || die "shared harnesses not found at $SHARED (set GUILD_SHARED_BENCH)"
for f in peers/run.sh peers/run.py bullmq/run_all.sh bullmq/summarize.py embedded/bare_trio.py; do
    [ -f "$SHARED/$f" ] || die "$SHARED/$f is missing (set GUILD_SHARED_BENCH)"
done
command -v redis-server >/dev/null || die "redis-server is not on PATH"
if want bullmq; then
    command -v node >/dev/null && command -v npm >/dev/null || die "bullmq needs node and npm on PATH"
fi
mkdir -p "$RES" || die "cannot make $RES"
: >"$RES/timings.tsv"

# Every peer runs from a pip-installed venv, whose modules pip compiled at
# install time; guild runs from this checkout (an editable install). With
# PYTHONDONTWRITEBYTECODE set (some shells and CI images set it), every spawn of
# guild would compile its ~100 modules again: about 40 % of its start-up. So
# the trees are compiled once here, as an installed package is.
unset PYTHONDONTWRITEBYTECODE
"$PY" -m compileall -q "$ROOT/guild" "$ROOT/guild_workers" "$ROOT/benchmarks" >/dev/null \
    || die "compileall failed on $ROOT"
if [ -n "${BASELINE_TREE:-}" ]; then
    "$PY" -m compileall -q "$BASELINE_TREE" >/dev/null || die "compileall failed on $BASELINE_TREE"
fi
FAILED=()

free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

# One part: its output to $RES/NAME.log (and the terminal), its wall time to timings.tsv.
part() {
    local name=$1; shift
    local t0 t1 rc load
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "=== $(date -u +%T) $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
    t0=$(date +%s.%N)
    "$@" 2>&1 | tee "$RES/$name.log"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s.%N)
    awk -v n="$name" -v a="$t0" -v b="$t1" -v rc="$rc" -v l="$load" \
        'BEGIN { printf "%s\t%.1f\t%s\t%s\n", n, b - a, rc, l }' >>"$RES/timings.tsv"
    [ "$rc" = 0 ] || { FAILED+=("$name"); echo "=== $name FAILED (exit $rc), see $RES/$name.log"; }
    return 0
}

setup() {
    local ok=0
    if want huey && ! "$HUEY_PYTHON" -c "import huey" 2>/dev/null; then
        [ "$HUEY_PYTHON" = /tmp/huey-venv/bin/python ] || { echo "HUEY_PYTHON=$HUEY_PYTHON cannot import huey" >&2; return 1; }
        python3 -m venv /tmp/huey-venv && /tmp/huey-venv/bin/pip install -q huey || ok=1
    fi
    if want bullmq && ! NODE_PATH=$BULLMQ_DIR/node_modules node -e "require('bullmq'); require('ioredis')" 2>/dev/null; then
        # ioredis is optional in bullmq's newest 6.x and must be installed beside it.
        mkdir -p "$BULLMQ_DIR" && npm install --prefix "$BULLMQ_DIR" bullmq@6 ioredis@6 || ok=1
    fi
    if want bullmq || want peers; then
        # run.sh would make these itself; doing it here keeps pip's time out of the peers part.
        # The bullmq harness reads its venv from /tmp/guild-peerbench/venv whatever PEERS_STATE says.
        for pair in "$PEERS_STATE/venv:requirements.txt" "$PEERS_STATE/venv-taskiq:requirements-taskiq.txt" \
            "/tmp/guild-peerbench/venv:requirements.txt"; do
            local v=${pair%%:*}
            if [ ! -x "$v/bin/python" ]; then
                python3 -m venv "$v" && "$v/bin/pip" install -q -r "$SHARED/peers/${pair#*:}" || ok=1
            fi
        done
    fi
    {
        echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' + uncommitted changes')"
        echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
        echo "python: $("$PY" -c 'import sys, trio; print(sys.version.split()[0], "trio", trio.__version__)')"
        echo "redis-server: $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
        command -v node >/dev/null && echo "node: $(node --version)"
        echo "shared harnesses: $SHARED"
    } >"$RES/machine.txt"
    cat "$RES/machine.txt"
    return $ok
}

throughput() {
    local port pid rc=0 r url
    port=$(free_port)
    redis-server --port "$port" --save "" --appendonly no --daemonize yes \
        --pidfile "$RES/throughput-redis.pid" --logfile "$RES/throughput-redis.log" || return 1
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    pid=$(cat "$RES/throughput-redis.pid")
    mkdir -p "$RES/throughput"
    for r in $(seq "$THROUGHPUT_ROUNDS"); do
        local db
        db=$(mktemp -d /tmp/guild-bench-db.XXXXXX)
        "$PY" "$SHARED/embedded/bare_trio.py" | tee "$RES/throughput/r$r-bare_trio.txt" || rc=1
        local trees=(now)
        if [ -n "${BASELINE_TREE:-}" ]; then
            # Alternate which tree goes first, so drift in the machine's load weighs on both.
            if [ $((r % 2)) = 1 ]; then trees=(now base); else trees=(base now); fi
        fi
        for tree in "${trees[@]}"; do
            local suffix="" pp=${PYTHONPATH:-}
            [ "$tree" = base ] && { suffix="@base"; pp=$BASELINE_TREE${PYTHONPATH:+:$PYTHONPATH}; }
            for spec in "memory:memory://:64" "memory16:memory://:16" \
                "sqlite-normal:sqlite:///$db/n$tree.db?synchronous=NORMAL:64" \
                "sqlite-full:sqlite:///$db/f$tree.db?synchronous=FULL:64" \
                "sqlite-default:sqlite:///$db/d$tree.db:64" \
                "redis:redis://127.0.0.1:$port/0:64"; do
                local label=${spec%%:*}$suffix rest=${spec#*:}
                url=${rest%:*}
                [[ "$label" == redis* ]] && redis-cli -p "$port" flushall >/dev/null
                echo "round $r: $label ($url)"
                PYTHONPATH=$pp "$PY" "$ROOT/benchmarks/bench_throughput.py" --broker "$url" \
                    -n "$THROUGHPUT_N" --concurrency "${rest##*:}" --json \
                    >"$RES/throughput/r$r-$label.json" || rc=1
            done
        done
        rm -rf "$db"
    done
    kill "$pid" 2>/dev/null
    return $rc
}

startup() {
    local trees=(--tree "now=$ROOT")
    [ -n "${BASELINE_TREE:-}" ] && trees+=(--tree "base=$BASELINE_TREE")
    for t in ${STARTUP_TREES:-}; do trees+=(--tree "$t"); done
    "$PY" "$ROOT/benchmarks/bench_startup.py" -n "$STARTUP_N" "${trees[@]}" --json >"$RES/startup.json" &&
        cat "$RES/startup.json"
}

sandbox() {
    "$PY" "$ROOT/benchmarks/bench_sandbox.py" -n "$SANDBOX_N" --json >"$RES/sandbox.json" &&
        cat "$RES/sandbox.json"
}

huey() {
    "$PY" "$ROOT/benchmarks/bench_vs_huey.py" -n "$HUEY_N" --rounds "$HUEY_ROUNDS" \
        --synchronous NORMAL,FULL,FULL=default --processes 1,2 --huey-workers "$HUEY_WORKERS" \
        --callers "$HUEY_CALLERS" \
        --guild-enqueue "$HUEY_GUILD_ENQUEUE" --huey-python "$HUEY_PYTHON" \
        --json "$RES/huey.json" &&
        # Huey's enqueue is a plain function call; so is guild.Client.enqueue, the
        # same API shape (the rows above use the other enqueue, for comparison).
        "$PY" "$ROOT/benchmarks/bench_vs_huey.py" -n "$HUEY_N" --rounds "$HUEY_ROUNDS" \
            --synchronous NORMAL,FULL,FULL=default --enqueue-only --callers "$HUEY_CALLERS" \
            --guild-enqueue "$HUEY_OTHER_ENQUEUE" --huey-python "$HUEY_PYTHON" \
            --json "$RES/huey-$HUEY_OTHER_ENQUEUE.json"
}

sqlite() {
    "$PY" "$ROOT/benchmarks/bench_sqlite_drain.py" --rounds "$SQLITE_ROUNDS" --small "$SQLITE_SMALL" \
        --large "$SQLITE_LARGE" --fleet-n "$SQLITE_FLEET_N" --json "$RES/sqlite.json"
}

bullmq() {
    # The harness's own script: BullMQ (c=1,16,64) and guild (peer_guild.py through the peers
    # driver), 3 interleaved repetitions at 10,000 jobs and 300 round trips, on its own redis-server.
    OUT=$RES/bullmq PORT=$(free_port) GUILD_CHECKOUT=$ROOT bash "$SHARED/bullmq/run_all.sh" &&
        python3 "$SHARED/bullmq/summarize.py" "$RES/bullmq" | tee "$RES/bullmq/summary.md"
}

peers() {
    BENCH_REDIS_PORT=$(free_port) BENCH_OUT=$RES/peers PEERS_ADAPTER_PATH=$ROOT/benchmarks \
        bash "$SHARED/peers/run.sh" --peers "$PEERS_LIST" \
        --python-for "guild=$PY" --variant 'guild-p2:guild:{"processes": 2}' \
        --reps "$PEERS_REPS" --n "$PEERS_N" --logdir "$RES/peers/logs"
}

START=$(date +%s)
part setup setup
for p in $PARTS; do
    case $p in
        throughput | startup | sandbox | huey | sqlite | bullmq | peers) part "$p" "$p" ;;
        *) die "unknown part $p" ;;
    esac
done
printf 'total\t%s\t\n' "$(($(date +%s) - START))" >>"$RES/timings.tsv"
"$PY" "$ROOT/benchmarks/summarize_all.py" "$RES" >"$RES/summary.md" || FAILED+=(summary)
cat "$RES/summary.md"
echo "results: $RES"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed parts: ${FAILED[*]}" >&2
    exit 1
fi
