#!/usr/bin/env bash
# The production topology on one machine, without containers: redis-server, two `hub ws`, one
# `hub ingest` and haproxy in front (deploy/haproxy.cfg). Runs in the foreground until Ctrl-C, then
# stops exactly the processes it started.
#
# Like an orchestrator, it starts a hub node again when it exits 0 after draining, so
# `kill -TERM $(cat <dir>/ws1.pid)` is a rolling restart of ws1: its clients move to ws2 through
# haproxy and it comes back empty. Any other exit (a crash, Redis or haproxy dying) stops everything:
# a half-running topology misleads.
#
# Everything it writes (redis dir, logs, pid files, a `ready` marker) goes to one temp dir, removed
# at exit unless the caller passed its own CLUSTER_DIR (a test fixture keeps it to read pids).
#
# Environment (defaults in brackets):
#   HUB [.venv/bin/hub; may be a command line such as "python -m hub"]  PYTHON [.venv/bin/python]
#   HAPROXY [haproxy]  REDIS_SERVER [redis-server]
#   LB_PORT [6001]  WS1_PORT [6101]  WS2_PORT [6102]  INGEST_PORT [6201]
#   WS1_METRICS_PORT [9611]  WS2_METRICS_PORT [9612]  INGEST_METRICS_PORT [9621]
#   REDIS_PORT [6379, or a free port when that one is taken]  HUB_DRAIN_SECONDS [10]
#   CLUSTER_DIR [a new temp dir]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
read -r -a hub <<<"${HUB:-$root/.venv/bin/hub}"
PYTHON=${PYTHON:-$root/.venv/bin/python}
HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
LB_PORT=${LB_PORT:-6001}
WS1_PORT=${WS1_PORT:-6101}
WS2_PORT=${WS2_PORT:-6102}
INGEST_PORT=${INGEST_PORT:-6201}
WS1_METRICS_PORT=${WS1_METRICS_PORT:-9611}
WS2_METRICS_PORT=${WS2_METRICS_PORT:-9612}
INGEST_METRICS_PORT=${INGEST_METRICS_PORT:-9621}
export HUB_DRAIN_SECONDS=${HUB_DRAIN_SECONDS:-10}

for tool in "${hub[0]}" "$PYTHON" "$HAPROXY" "$REDIS_SERVER"; do
    [[ -x $tool ]] || { echo "cluster: $tool not found (make cluster installs it)" >&2; exit 1; }
done

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ -z ${REDIS_PORT:-} ]]; then
    REDIS_PORT=6379
    # Another redis (a system service, a test) may hold 6379; ours is private, any port will do.
    if port_busy "$REDIS_PORT"; then
        REDIS_PORT=$("$PYTHON" -c \
            'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    fi
fi
for port in "$LB_PORT" "$WS1_PORT" "$WS2_PORT" "$INGEST_PORT" "$REDIS_PORT" \
    "$WS1_METRICS_PORT" "$WS2_METRICS_PORT" "$INGEST_METRICS_PORT"; do
    if port_busy "$port"; then echo "cluster: port $port is already in use" >&2; exit 1; fi
done
redis_url="redis://127.0.0.1:$REDIS_PORT/0"

if [[ -n ${CLUSTER_DIR:-} ]]; then
    dir=$CLUSTER_DIR
    keep_dir=1
else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/hub-cluster.XXXXXX")
    keep_dir=0
fi
mkdir -p "$dir"

# Parallel arrays, in start order: redis first, haproxy last.
names=()
pids=()
stopping=0

# Nodes and haproxy first, so the nodes can remove their sockets from Redis while draining; Redis last.
stop_all() {
    local status=$?
    ((stopping)) && return
    stopping=1
    trap '' INT TERM
    rm -f "$dir/ready"
    local i pid deadline=$((SECONDS + ${HUB_DRAIN_SECONDS%.*} + 5))
    for ((i = ${#pids[@]} - 1; i > 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for ((i = ${#pids[@]} - 1; i > 0; i--)); do
        pid=${pids[i]}
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "cluster: ${names[i]} (pid $pid) still running after the drain period, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if ((${#pids[@]})); then
        kill -TERM "${pids[0]}" 2>/dev/null || true
        wait "${pids[0]}" 2>/dev/null || true
    fi
    ((keep_dir)) || rm -rf "$dir"
    echo "cluster: stopped" >&2
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# command_of NAME: sets `argv` to the command line of process NAME.
command_of() {
    local role port metrics
    case $1 in
        redis)
            argv=("$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir"
                --save "" --appendonly no --daemonize no)
            return ;;
        haproxy)
            argv=(env LB_BIND="127.0.0.1:$LB_PORT" WS1_ADDR="127.0.0.1:$WS1_PORT"
                WS2_ADDR="127.0.0.1:$WS2_PORT" INGEST1_ADDR="127.0.0.1:$INGEST_PORT"
                "$HAPROXY" -db -f "$root/deploy/haproxy.cfg")
            return ;;
        ws1) role=ws port=$WS1_PORT metrics=$WS1_METRICS_PORT ;;
        ws2) role=ws port=$WS2_PORT metrics=$WS2_METRICS_PORT ;;
        ingest1) role=ingest port=$INGEST_PORT metrics=$INGEST_METRICS_PORT ;;
    esac
    argv=("${hub[@]}" "$role" --host 127.0.0.1 --port "$port" --metrics-port "$metrics"
        --redis-url "$redis_url" --node-id "$1")
}

# start NAME: runs it in the background, output appended to $dir/NAME.log, pid in $dir/NAME.pid.
# setsid keeps a terminal's Ctrl-C away from the children (redis and haproxy would quit at once), so
# stop_all alone decides the order; it execs, so $! is the command's own pid.
start() {
    local name=$1 i
    command_of "$name"
    setsid "${argv[@]}" >>"$dir/$name.log" 2>&1 </dev/null &
    # Written aside and renamed, so a reader never sees the file empty or half written.
    echo $! >"$dir/$name.pid.new" && mv -f "$dir/$name.pid.new" "$dir/$name.pid"
    for i in "${!names[@]}"; do
        if [[ ${names[i]} == "$name" ]]; then
            pids[i]=$!
            return
        fi
    done
    names+=("$name")
    pids+=($!)
}

# wait_ready NAME URL: polls URL until it answers 200, giving up when the process has died.
wait_ready() {
    local name=$1 url=$2 i pid
    pid=$(<"$dir/$name.pid")
    for ((i = 0; i < 150; i++)); do
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$url" \
            2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    echo "cluster: $name did not become ready at $url; last lines of $dir/$name.log:" >&2
    tail -n 20 "$dir/$name.log" >&2 || true
    exit 1
}

start redis
for ((i = 0; i < 50; i++)); do port_busy "$REDIS_PORT" && break; sleep 0.1; done
start ws1
start ws2
start ingest1
wait_ready ws1 "http://127.0.0.1:$WS1_PORT/ready"
wait_ready ws2 "http://127.0.0.1:$WS2_PORT/ready"
wait_ready ingest1 "http://127.0.0.1:$INGEST_PORT/ready"
start haproxy
wait_ready haproxy "http://127.0.0.1:$LB_PORT/ready"

cat <<EOF
hub cluster is up (logs and pids in $dir)
  clients    ws://127.0.0.1:$LB_PORT/app/{key}
  backends   http://127.0.0.1:$LB_PORT/apps/{app_id}/events
  nodes      ws1 :$WS1_PORT  ws2 :$WS2_PORT  ingest1 :$INGEST_PORT  (metrics :$WS1_METRICS_PORT :$WS2_METRICS_PORT :$INGEST_METRICS_PORT)
  redis      $redis_url
Rolling restart of a node: kill -TERM \$(cat $dir/ws1.pid)    Ctrl-C stops everything.
EOF
echo "ready" >"$dir/ready"

name=""
while true; do
    set +e
    wait -n -p exited "${pids[@]}"
    status=$?
    set -e
    for i in "${!pids[@]}"; do
        [[ ${pids[i]} == "$exited" ]] && name=${names[i]}
    done
    if [[ $name == ws* || $name == ingest* ]] && ((status == 0)); then
        echo "cluster: $name drained and exited; starting it again" >&2
        start "$name"
        continue
    fi
    echo "cluster: $name exited (status $status); last lines of $dir/$name.log:" >&2
    tail -n 20 "$dir/$name.log" >&2 || true
    exit 1
done
