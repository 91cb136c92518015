#!/usr/bin/env bash
# The cache table (crates/paragon-layers/src/cache/store.rs) against the same table over
# moka and over quick_cache (features `table-moka`, `table-quick` of paragon-layers;
# measurement variants only), end to end. See BENCHMARKS.md, "The cache table against
# moka and quick_cache".
#
#   bench/tables.sh build            release edges of the three tables, in target/tables/{table,moka,quick}/
#   bench/tables.sh hits [R] [S]     bench/compare.sh table VARIANT R S for each variant (hits, CORS off and on)
#   bench/tables.sh miss [R] [S]     the same with LOAD=miss (ids never seen; the table fills, then evicts)
#   bench/tables.sh instr            callgrind: user-space instructions per hit and per miss, each table
#   bench/tables.sh memory [N]       cache_memory --external-sim, N runs per table (default 3)
#
# Defaults: 8 rounds of 4 s. Needs 2 CPUs, wrk and valgrind (installed with apt-get when
# missing). CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BINS="$TARGET/tables"
VARIANTS="table moka quick"
cmd=${1:-}; shift || true

need() { command -v "$1" >/dev/null || { apt-get install -y "$2" >/dev/null 2>&1 ||
  { apt-get update >/dev/null && apt-get install -y "$2" >/dev/null; }; }; }

case "$cmd" in
build)
  mkdir -p "$BINS"
  for v in $VARIANTS; do
    feat=(); [ "$v" != table ] && feat=(--features "paragon-layers/table-$v")
    (cd "$ROOT" && cargo build --release -q -p paragon-edge -p paragon-sim "${feat[@]}")
    mkdir -p "$BINS/$v"
    cp "$TARGET/release/paragon-edge" "$TARGET/release/paragon-sim" "$BINS/$v/"
    echo "built $BINS/$v/paragon-edge"
  done
  ;;
hits | miss)
  load=hits; [ "$cmd" = miss ] && load=miss
  for v in moka quick; do
    echo "== table (old) against $v (new), $load"
    LOAD=$load "$ROOT/bench/compare.sh" "$BINS/table/paragon-edge" "$BINS/$v/paragon-edge" \
      "${1:-8}" "${2:-4}"
  done
  ;;
instr)
  # One edge at a time under callgrind, instrumentation on only while measured: 1,000
  # ids cached, then hits over them; then 10 s of ids never seen fill the table
  # (max_entries 2,000, uninstrumented), then misses over ids never seen, each of
  # which evicts. The count of each window is its callgrind dump.
  need wrk wrk; need valgrind valgrind
  WORK=$(mktemp -d /tmp/paragon-tables.XXXXXX)
  PIDS=()
  trap 'for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
  read -r SIM_PORT EDGE_PORT < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1",0))
print(*[x.getsockname()[1] for x in s])')
  cat > "$WORK/hits.lua" <<'LUA'
local i = 0
request = function()
  i = i % 1000 + 1
  return wrk.format("GET", "/v1/users/u" .. i)
end
LUA
  cat > "$WORK/new.lua" <<'LUA'
local i = 0
local tag = tostring(os.time()) .. "-" .. tostring(math.random(1000000000))
request = function()
  i = i + 1
  return wrk.format("GET", "/v1/users/m" .. tag .. "-" .. i)
end
LUA
  cat > "$WORK/edge.toml" <<TOML
[server]
listen = "127.0.0.1:$EDGE_PORT"
[upstream]
base_url = "http://127.0.0.1:$SIM_PORT"
[cache]
ttl = "300s"
max_entries = 2000
[rate_limit]
max_requests = 1000000
window = "1s"
TOML
  RUST_LOG=warn taskset -c 1 "$BINS/table/paragon-sim" --listen "127.0.0.1:$SIM_PORT" \
    >"$WORK/sim.log" 2>&1 &
  PIDS+=($!)
  sleep 1
  window() {  # PID LUA SECONDS DUMP_NUMBER -> requests served in the window
    callgrind_control -i on "$1" >/dev/null 2>&1
    local n; n=$(taskset -c 1 wrk -t1 -c4 -d"$3" -s "$WORK/$2" "http://127.0.0.1:$EDGE_PORT" |
      awk '/requests in/ {print $1}')
    callgrind_control -i off "$1" >/dev/null 2>&1
    callgrind_control -d "$1" >/dev/null 2>&1
    for _ in $(seq 1 100); do [ -s "$WORK/cg.$v.out.$4" ] && break; sleep 0.1; done
    sleep 0.5
    echo "$n"
  }
  totals() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'; }
  for v in $VARIANTS; do
    RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$WORK/cg.$v.out" "$BINS/$v/paragon-edge" --config "$WORK/edge.toml" serve \
      >"$WORK/$v.log" 2>&1 &
    pid=$!; PIDS+=($pid)
    for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$EDGE_PORT") 2>/dev/null && break; sleep 0.1; done
    taskset -c 1 wrk -t1 -c4 -d3s -s "$WORK/hits.lua" "http://127.0.0.1:$EDGE_PORT" >/dev/null
    hits=$(window "$pid" hits.lua 5s 1)
    # fill past the 2,000 entries the table holds (fill_requests says how far), uninstrumented
    taskset -c 1 wrk -t1 -c4 -d10s -s "$WORK/new.lua" "http://127.0.0.1:$EDGE_PORT" >"$WORK/fill.txt"
    misses=$(window "$pid" new.lua 5s 2)
    kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    ih=$(totals "$WORK/cg.$v.out.1"); im=$(totals "$WORK/cg.$v.out.2")
    python3 -c 'import json,sys
v,ih,nh,im,nm,nf=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]),sys.argv[6]
print(json.dumps({"table":v,"hits":nh,"instructions_per_hit":round(ih/max(1,nh)),
  "misses":nm,"instructions_per_miss":round(im/max(1,nm)),"fill_requests":int(nf)}))' \
      "$v" "$ih" "$hits" "$im" "$misses" "$(awk '/requests in/ {print $1}' "$WORK/fill.txt")"
  done
  ;;
memory)
  [ -x "$TARGET/release/cache_memory" ] ||
    (cd "$ROOT" && cargo build --release -q -p paragon-bench --bin cache_memory)
  for r in $(seq 1 "${1:-3}"); do
    for v in $VARIANTS; do
      echo "run $r, $v: $("$TARGET/release/cache_memory" --external-sim --edge "$BINS/$v/paragon-edge")"
    done
  done
  ;;
*) sed -n 2,15p "$0" >&2; exit 2 ;;
esac
