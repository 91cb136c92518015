#!/usr/bin/env bash
# ParagoN Edge load and stress benchmarks (loopback only, bounded in time).
#
#   bench/run.sh            HTTP load (bare axum / paragon-edge / nginx), instructions
#                           per request (callgrind), stress, Redis limiter latency;
#                           about 6 minutes on 2 cores
#   bench/run.sh --quick    the same, shorter runs; about 2 minutes once built
#   bench/run.sh --only http|instr|stress|attack|redis   one section
#   CARGO_TARGET_DIR=...    where the release binaries are built (default: target/)
#   BENCH_NO_BUILD=1        use the binaries already built
#   OLD_EDGE=PATH           --only instr: also count an older paragon-edge binary
#
# Results: bench/results/*.json and bench/results/chart.svg (see BENCHMARKS.md).
# The criterion benches are separate (see BENCHMARKS.md, "Reproducing"):
# cargo bench -p paragon-bench --bench layers, then python3 bench/report.py bench/results.
#
# Needs 2 CPUs: the server under test is pinned to CPU 0 (taskset), wrk and the
# simulated upstream to CPU 1. Installs wrk and nginx with apt-get when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/bench/results"
QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--only http|instr|stress|attack|redis]" >&2; exit 2 ;;
  esac
  shift
done
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

if [ "$QUICK" = 1 ]; then DUR=2s; WARM=1s; ROUNDS=2; else DUR=5s; WARM=3s; ROUNDS=5; fi
THREADS=1; CONNS=32          # identical wrk settings for every server
SERVER_CPU=0; CLIENT_CPU=1
SIM_PORT=18090; BARE_PORT=18081; EDGE_PORT=18082; NGINX_PORT=18083
EDGE_CORS_PORT=18084; NGINX_CORS_PORT=18085; ORIGIN="http://localhost:3000"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/paragon-bench.XXXXXX)"
chmod 755 "$WORK"   # nginx workers run unprivileged
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 0.3
  cp "$WORK"/*.log "$WORK"/wrk-*.txt "$KEEP_LOGS"/ 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
KEEP_LOGS="$OUT/logs"; mkdir -p "$KEEP_LOGS"

need() {  # need COMMAND PACKAGE
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "installing $2" >&2
    (apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; })
  fi
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

port_free() {  # fail loudly when a stale server still holds one of our ports
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "port $p is already in use: stop what listens there first" >&2; exit 1
    fi
  done
}
port_free "$SIM_PORT" "$BARE_PORT" "$EDGE_PORT" "$NGINX_PORT"

cpu_ticks() {  # "pid:ticks" (utime+stime, clock ticks) for each given pid still alive
  for p in "$@"; do
    # fields after the command name: state is field 3, utime 14, stime 15
    local f; f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    echo -n "$p:$((${12} + ${13})) "
  done
}

ticks_between() {  # BEFORE AFTER -> ticks used by the pids alive at both readings
  python3 -c 'import sys
b=dict(x.split(":") for x in sys.argv[1].split())
a=dict(x.split(":") for x in sys.argv[2].split())
print(sum(int(a[p]) - int(b[p]) for p in a if p in b))' "$1" "$2"
}

to_ms() {  # wrk latency like 812.00us / 1.23ms / 1.01s -> ms
  python3 -c 'import sys,re
v=sys.argv[1]; m=re.match(r"([0-9.]+)(us|ms|s)",v); x=float(m.group(1))
print(x/1000 if m.group(2)=="us" else x*1000 if m.group(2)=="s" else x)' "$1"
}

CARGO_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$CARGO_TARGET/release"
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  echo "building release binaries (target: $CARGO_TARGET)" >&2
  (cd "$ROOT" && cargo build --release -q -p paragon-edge -p paragon-sim -p paragon-bench --bins)
fi

# ---------------------------------------------------------------- HTTP load
if want http || want instr; then
  need wrk wrk
  CLK_TCK=$(getconf CLK_TCK)

  cat > "$WORK/hits.lua" <<'LUA'
-- cycles through 1,000 ids that the warm-up has cached
local i = 0
request = function()
  i = i % 1000 + 1
  return wrk.format("GET", "/v1/users/u" .. i)
end
LUA
  cat > "$WORK/hits-cors.lua" <<LUA
-- the same hits from a browser's page: each request carries its Origin
local i = 0
request = function()
  i = i % 1000 + 1
  return wrk.format("GET", "/v1/users/u" .. i, { ["Origin"] = "$ORIGIN" })
end
LUA
  cat > "$WORK/mixed.lua" <<'LUA'
-- 90 % of requests for the 1,000 cached ids, 10 % for ids never seen before
local i, n = 0, 0
local tag = tostring(os.time()) .. tostring(math.random(1000000))
request = function()
  i = i + 1
  if i % 10 == 0 then
    n = n + 1
    return wrk.format("GET", "/v1/users/x" .. tag .. "-" .. n)
  end
  return wrk.format("GET", "/v1/users/u" .. (i % 1000 + 1))
end
LUA

  taskset -c "$CLIENT_CPU" "$BIN/paragon-sim" --listen "127.0.0.1:$SIM_PORT" >"$WORK/sim.log" 2>&1 &
  PIDS+=($!)
  wait_port "$SIM_PORT"

  cat > "$WORK/edge.toml" <<TOML
[server]
listen = "127.0.0.1:$EDGE_PORT"
[upstream]
base_url = "http://127.0.0.1:$SIM_PORT"
[cache]
ttl = "300s"
max_entries = 100000
[rate_limit]
max_requests = 1000000
window = "1s"
TOML
  # The same edge as a React frontend's: CORS on for its origin.
  { printf '[server]\nlisten = "127.0.0.1:%s"\ncors_allowed_origins = ["%s"]\n' "$EDGE_CORS_PORT" "$ORIGIN"
    sed '1,2d' "$WORK/edge.toml"; } > "$WORK/edge-cors.toml"
fi

if want http; then
  need nginx nginx
  mkdir -p "$WORK/nginx-cache"
  chmod 777 "$WORK/nginx-cache"
  # The cached proxy of /v1/users/, the same in both servers below.
  cat > "$WORK/users-proxy.conf" <<NGINX
limit_req zone=budget burst=1000000 nodelay;
proxy_pass http://paragon/users/;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_cache users;
proxy_cache_valid 200 300s;
proxy_cache_lock on;
proxy_cache_lock_timeout 5s;
proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
add_header x-cache \$upstream_cache_status;
NGINX
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon on;
events { worker_connections 1024; }
http {
  access_log off;
  # nginx as tuned for a cache: descriptors of cached files kept open
  open_file_cache max=10000 inactive=60s;
  open_file_cache_valid 60s;
  map \$http_origin \$cors_origin { default ""; "$ORIGIN" \$http_origin; }
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=users:32m max_size=1g inactive=10m use_temp_path=off;
  limit_req_zone \$server_name zone=budget:1m rate=1000000r/s;
  upstream paragon { server 127.0.0.1:$SIM_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /v1/users/ {
      include $WORK/users-proxy.conf;
    }
  }
  # The same proxy with CORS for the frontend's origin, as the edge answers it.
  server {
    listen 127.0.0.1:$NGINX_CORS_PORT;
    location /v1/users/ {
      include $WORK/users-proxy.conf;
      add_header Access-Control-Allow-Origin \$cors_origin;
      add_header Access-Control-Expose-Headers "x-cache, x-request-id, retry-after";
      add_header Vary Origin;
    }
  }
}
NGINX

  # All three servers run side by side on CPU 0 (an idle one costs nothing), and the
  # rounds interleave them: bare, edge, nginx, bare, edge, nginx, ... Each figure is then
  # the median over the rounds, so a noisy moment of the machine hits every server alike
  # instead of one server's whole run.
  declare -A PIDS_OF PORT_OF
  start_server() {  # name
    case "$1" in
      bare)
        taskset -c "$SERVER_CPU" "$BIN/bare_axum" --listen "127.0.0.1:$BARE_PORT" >"$WORK/bare.log" 2>&1 &
        PIDS_OF[bare]="$!"; PIDS+=($!); PORT_OF[bare]=$BARE_PORT ;;
      edge)
        RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN/paragon-edge" --config "$WORK/edge.toml" serve >"$WORK/edge.log" 2>&1 &
        PIDS_OF[edge]="$!"; PIDS+=($!); PORT_OF[edge]=$EDGE_PORT ;;
      edge-cors)
        RUST_LOG=warn taskset -c "$SERVER_CPU" "$BIN/paragon-edge" --config "$WORK/edge-cors.toml" serve >"$WORK/edge-cors.log" 2>&1 &
        PIDS_OF[edge-cors]="$!"; PIDS+=($!); PORT_OF[edge-cors]=$EDGE_CORS_PORT ;;
      nginx-cors)
        # the same nginx (started for "nginx"), its CORS server
        PORT_OF[nginx-cors]=$NGINX_CORS_PORT; PIDS_OF[nginx-cors]="${PIDS_OF[nginx]}" ;;
      nginx)
        rm -rf "${WORK:?}/nginx-cache"/*
        taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx.conf" -p "$WORK" 2>>"$WORK/nginx-error.log"
        PORT_OF[nginx]=$NGINX_PORT
        wait_port "$NGINX_PORT"
        local master; master=$(cat "$WORK/nginx.pid")
        PIDS_OF[nginx]="$master $(pgrep -P "$master" | tr '\n' ' ')" ;;
    esac
    wait_port "${PORT_OF[$1]}"
  }

  measure() {  # server label script round -> one JSON line
    local server=$1 name=$2 script=$3 round=$4
    local before after
    if [ "${server%-cors}" = nginx ]; then
      # nginx's cache loader exits a minute after start: count the processes alive now
      local master; master=$(cat "$WORK/nginx.pid")
      PIDS_OF[$server]="$master $(pgrep -P "$master" | tr '\n' ' ')"
    fi
    before=$(cpu_ticks ${PIDS_OF[$server]})
    taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency -s "$WORK/$script" "http://127.0.0.1:${PORT_OF[$server]}" >"$WORK/wrk-$name.txt"
    after=$(cpu_ticks ${PIDS_OF[$server]})
    local rps p50 p99 reqs non2xx
    rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk-$name.txt")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' "$WORK/wrk-$name.txt")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' "$WORK/wrk-$name.txt")")
    reqs=$(awk '/requests in/ {print $1}' "$WORK/wrk-$name.txt")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk-$name.txt"); non2xx=${non2xx:-0}
    python3 -c 'import json,sys
n,rnd,rps,p50,p99,reqs,ticks,tck,bad=sys.argv[1:]
print(json.dumps({"server":n,"round":int(rnd),"rps":float(rps),"p50_ms":float(p50),"p99_ms":float(p99),
 "requests":int(reqs),"non_2xx":int(bad),
 "cpu_us_per_req":int(ticks)/int(tck)*1e6/max(1,int(reqs))}))' \
      "$name" "$round" "$rps" "$p50" "$p99" "$reqs" "$(ticks_between "$before" "$after")" "$CLK_TCK" "$non2xx"
  }

  : > "$OUT/http.jsonl"
  script_of() { case "$1" in *-cors) echo hits-cors.lua ;; *) echo hits.lua ;; esac; }
  for s in bare edge nginx edge-cors nginx-cors; do
    start_server "$s"
    # warm-up: caches every one of the 1,000 ids, opens the connections
    taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$WARM" -s "$WORK/$(script_of "$s")" "http://127.0.0.1:${PORT_OF[$s]}" >/dev/null
  done
  if [ "$(curl -s -o /dev/null -w '%header{access-control-allow-origin}' -H "Origin: $ORIGIN" "http://127.0.0.1:$NGINX_CORS_PORT/v1/users/u1")" != "$ORIGIN" ]; then
    echo "nginx-cors does not answer with CORS headers" >&2; exit 1
  fi
  for round in $(seq 1 "$ROUNDS"); do
    for s in bare edge nginx edge-cors nginx-cors; do
      measure "$s" "$s" "$(script_of "$s")" "$round" | tee -a "$OUT/http.jsonl"
    done
  done
  for round in $(seq 1 "$ROUNDS"); do
    for s in edge nginx; do
      measure "$s" "$s-90pct-hits" mixed.lua "$round" | tee -a "$OUT/http.jsonl"
    done
  done
  # free the ports for the sections below
  kill ${PIDS_OF[bare]} ${PIDS_OF[edge]} ${PIDS_OF[edge-cors]} 2>/dev/null || true
  kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; rm -f "$WORK/nginx.pid"
  sleep 0.5
fi

# ---------------------------------------------------------------- instructions
# The same hit load under callgrind: user-space instructions per request of bare axum
# and of paragon-edge. Unlike time, this count does not move with the machine's load,
# so it settles the edge / bare ratio that the noisy req/s figures only bracket. Kernel
# work (sockets, about 60 % of each server's CPU time) is not counted; it is the same
# per request for both, so the ratio of total CPU is smaller than this one.
if want instr; then
  need valgrind valgrind
  : > "$OUT/instructions.jsonl"
  # OLD_EDGE=path/to/paragon-edge adds an older binary, measured the same way.
  servers="bare edge edge-cors"; [ -n "${OLD_EDGE:-}" ] && servers="$servers old-edge old-edge-cors"
  for s in $servers; do
    script=hits.lua
    case "$s" in
      bare) port=$BARE_PORT; cmd=("$BIN/bare_axum" --listen "127.0.0.1:$BARE_PORT") ;;
      edge) port=$EDGE_PORT; cmd=("$BIN/paragon-edge" --config "$WORK/edge.toml" serve) ;;
      edge-cors) port=$EDGE_CORS_PORT; script=hits-cors.lua
        cmd=("$BIN/paragon-edge" --config "$WORK/edge-cors.toml" serve) ;;
      old-edge) port=$EDGE_PORT; cmd=("$OLD_EDGE" --config "$WORK/edge.toml" serve) ;;
      old-edge-cors) port=$EDGE_CORS_PORT; script=hits-cors.lua
        cmd=("$OLD_EDGE" --config "$WORK/edge-cors.toml" serve) ;;
    esac
    RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$WORK/$s.callgrind" "${cmd[@]}" >"$WORK/$s-callgrind.log" 2>&1 &
    pid=$!; PIDS+=($pid)
    wait_port "$port"
    wrk -t1 -c4 -d3s -s "$WORK/$script" "http://127.0.0.1:$port" >/dev/null   # fill, warm
    callgrind_control -i on "$pid" >/dev/null
    reqs=$(wrk -t1 -c4 -d"$DUR" -s "$WORK/$script" "http://127.0.0.1:$port" | awk '/requests in/ {print $1}')
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    dump="$WORK/$s.callgrind.1"   # the dump of the measured window, written asynchronously
    for _ in $(seq 1 100); do [ -s "$dump" ] && break; sleep 0.1; done
    sleep 0.5
    kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    python3 -c 'import json,sys
s,ir,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
print(json.dumps({"server":s,"requests":n,"instructions":ir,"instructions_per_req":ir/max(1,n)}))' \
      "$s" "$ir" "$reqs" | tee -a "$OUT/instructions.jsonl"
  done
fi

# ---------------------------------------------------------------- stress
if want stress; then
  Q=""; [ "$QUICK" = 1 ] && Q="--quick"
  : > "$OUT/stress.jsonl"
  for s in overload stampede churn; do
    timeout 120 "$BIN/stress" "$s" $Q | tee -a "$OUT/stress.jsonl"
  done
fi

# ---------------------------------------------------------------- memory and attacks
# Memory per cached user (100,000 users of ~200 B and of 2 KB), then memory and
# descriptors of the edge under connection attacks (slowloris, unfinished 400 KB heads,
# idle keep-alives).
if want attack; then
  Q=""; [ "$QUICK" = 1 ] && Q="--quick"
  timeout 600 "$BIN/cache_memory" --external-sim | tee "$OUT/cache_memory.jsonl"
  timeout 300 python3 "$ROOT/bench/attack.py" --edge "$BIN/paragon-edge" $Q | tee "$OUT/attack.jsonl"
fi

# ---------------------------------------------------------------- Redis limiter
if want redis; then
  CALLS=20000; [ "$QUICK" = 1 ] && CALLS=5000
  if ! command -v redis-server >/dev/null 2>&1; then need redis-server redis-server || true; fi
  timeout 300 "$BIN/redis_limiter" --calls "$CALLS" | tee "$OUT/redis.jsonl"
fi

python3 "$ROOT/bench/report.py" "$OUT"
