#!/usr/bin/env bash
# Cache-hit throughput of two paragon-edge binaries, interleaved on one machine.
#
#   bench/compare.sh OLD_BIN NEW_BIN [ROUNDS] [SECONDS]     (defaults: 5 rounds, 5 s)
#   SIM_BIN=...   the paragon-sim to use (default: next to NEW_BIN)
#   LOAD=miss     misses instead of hits: CORS off only, wrk asks for ids never seen
#                 before (the table fills, then every miss also evicts); the warm-up
#                 still caches u1..u1000
#
# One paragon-sim on CPU 1; for CORS off (the default) and CORS on (an allowed origin,
# wrk sending Origin), the old and the new edge run side by side on CPU 0, each warmed
# with /v1/users/u1..u1000 (checked to be cache hits), then wrk -t1 -c32 on CPU 1 cycles
# through those ids: one round of each binary in turn, the order swapped every round
# (old new, new old, ...) so a drift of the machine's load favours neither. Each round
# is a 1 s unmeasured run, then SECONDS measured. Prints per round the req/s, the share
# of a CPU the edge got and its CPU time per request (user+system: the latter moves less
# with other load than req/s does); then the median and range of req/s per binary,
# new/old of the medians, the median of the per-round new/old (robust to a drift of the
# load) with the rounds the new one won, and the median CPU us per request. Loopback only; stops what it
# started. Needs 2 CPUs; installs wrk with apt-get when missing. Both binaries get the
# same config, with only keys the old one knows.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN [ROUNDS] [SECONDS]" >&2; exit 2; }
OLD=$(realpath "$1"); NEW=$(realpath "$2"); ROUNDS=${3:-5}; SECS=${4:-5}
SIM=${SIM_BIN:-$(dirname "$NEW")/paragon-sim}
for b in "$OLD" "$NEW" "$SIM"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
ORIGIN="http://localhost:3000"
for e in $(compgen -e | grep '^PARAGON_EDGE__' || true); do unset "$e"; done  # no overrides

command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 ||
  { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }

WORK=$(mktemp -d /tmp/paragon-compare.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# five ports free now: the sim's, then old and new edge for each configuration
read -r SIM_PORT P1 P2 P3 P4 < <(python3 -c 'import socket
s=[socket.socket() for _ in range(5)]
for x in s: x.bind(("127.0.0.1",0))
print(*[x.getsockname()[1] for x in s])')

wait_port() {  # PORT: up to 10 s
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1 (see the logs below)" >&2; tail -n 5 "$WORK"/*.log >&2; exit 1
}

LOAD=${LOAD:-hits}; CORS_MODES="off on"; [ "$LOAD" = miss ] && CORS_MODES="off"
for cors in off on; do
  hdr=""; [ $cors = on ] && hdr="[\"Origin\"] = \"$ORIGIN\""
  cat > "$WORK/hits-$cors.lua" <<LUA
local i = 0
request = function()
  i = i % 1000 + 1
  return wrk.format("GET", "/v1/users/u" .. i, { $hdr })
end
LUA
  if [ "$LOAD" = miss ]; then
    cat > "$WORK/hits-$cors.lua" <<LUA
local i = 0
local tag = tostring(os.time()) .. "-" .. tostring(math.random(1000000000))
request = function()
  i = i + 1
  return wrk.format("GET", "/v1/users/m" .. tag .. "-" .. i, { $hdr })
end
LUA
  fi
done

warm() {  # PORT CORS: every id fetched twice; the second answer must be a 200 HIT
  timeout 60 python3 - "$1" "$2" "$ORIGIN" <<'PY'
import http.client, sys
port, cors, origin = int(sys.argv[1]), sys.argv[2] == "on", sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
h = {"Origin": origin} if cors else {}
for p in (1, 2):
    for i in range(1, 1001):
        c.request("GET", f"/v1/users/u{i}", headers=h)
        r = c.getresponse(); r.read()
        if p == 2 and (r.status != 200 or r.getheader("x-cache") != "HIT"):
            sys.exit(f"port {port}: u{i} answered {r.status} x-cache={r.getheader('x-cache')}")
        if p == 2 and cors and r.getheader("access-control-allow-origin") != origin:
            sys.exit(f"port {port}: no CORS header on u{i}")
PY
}

ticks() { set -- $(sed 's/^.*) //' "/proc/$1/stat"); echo $((${12} + ${13})); }  # utime+stime

rps() {  # PORT CORS PID -> "req/s  share of a CPU the edge used  CPU us per request"
  taskset -c 1 timeout 30 wrk -t1 -c32 -d1s -s "$WORK/hits-$2.lua" "http://127.0.0.1:$1" >/dev/null
  local t0; t0=$(ticks "$3")
  taskset -c 1 timeout $((SECS + 30)) wrk -t1 -c32 -d"${SECS}s" -s "$WORK/hits-$2.lua" \
    "http://127.0.0.1:$1" >"$WORK/wrk.txt"
  local t1; t1=$(ticks "$3")
  if grep -qE 'Non-2xx|Socket errors' "$WORK/wrk.txt"; then
    echo "  warning, port $1: $(grep -E 'Non-2xx|Socket errors' "$WORK/wrk.txt" | tr -s ' ')" >&2
  fi
  awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$SECS" '
    /requests in/ {n = $1} /^Requests\/sec/ {r = $2}
    END {printf "%s %.2f %.1f\n", r, t / hz / s, t / hz * 1e6 / n}' "$WORK/wrk.txt"
}

RUST_LOG=warn taskset -c 1 "$SIM" --listen "127.0.0.1:$SIM_PORT" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
wait_port "$SIM_PORT"

echo "old: $OLD"; echo "new: $NEW"
echo "load: $LOAD"
echo "rounds: $ROUNDS x ${SECS}s, wrk -t1 -c32 on CPU 1, edges on CPU 0; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$WORK/results.tsv"
for cors in $CORS_MODES; do
  declare -A PORT=([old]=$P1 [new]=$P2); [ $cors = on ] && PORT=([old]=$P3 [new]=$P4)
  declare -A PID=()
  for v in old new; do
    bin=$OLD; [ $v = new ] && bin=$NEW
    {
      printf '[server]\nlisten = "127.0.0.1:%s"\n' "${PORT[$v]}"
      [ $cors = on ] && printf 'cors_allowed_origins = ["%s"]\n' "$ORIGIN"
      printf '[upstream]\nbase_url = "http://127.0.0.1:%s"\n' "$SIM_PORT"
      printf '[cache]\nttl = "300s"\n'
      printf '[rate_limit]\nmax_requests = 1000000\nwindow = "1s"\n'
    } > "$WORK/edge-$v-$cors.toml"
    RUST_LOG=warn taskset -c 0 "$bin" --config "$WORK/edge-$v-$cors.toml" serve \
      >"$WORK/edge-$v-$cors.log" 2>&1 &
    PID[$v]=$!; PIDS+=($!)
    wait_port "${PORT[$v]}"
    warm "${PORT[$v]}" $cors
  done
  echo "CORS $cors"
  for r in $(seq 1 "$ROUNDS"); do
    order="old new"; [ $((r % 2)) = 0 ] && order="new old"
    for v in $order; do
      read -r x cpu us < <(rps "${PORT[$v]}" $cors "${PID[$v]}") ||
        { echo "round failed ($v, CORS $cors)" >&2; tail -n 5 "$WORK"/*.log >&2; exit 1; }
      printf '  round %d  %s  %8.0f req/s   edge CPU %.2f, %5.1f us/req   load %s\n' \
        "$r" "$v" "$x" "$cpu" "$us" "$(cut -d' ' -f1 /proc/loadavg)"
      printf '%s\t%s\t%s\t%s\n' "$cors" "$v" "$x" "$us" >> "$WORK/results.tsv"
    done
  done
  kill "${PID[old]}" "${PID[new]}" 2>/dev/null || true
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK/results.tsv" <<'PY'
import statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
print("\nreq/s        old     new  new/old  paired  new>old  range old | new"
      "             CPU us/req old    new")
for cors in sorted({c for c, *_ in rows}):
    v = {b: [(float(x), float(u)) for c, bb, x, u in rows if c == cors and bb == b]
         for b in ("old", "new")}
    r = {b: [x for x, _ in v[b]] for b in v}
    u = {b: st.median(u for _, u in v[b]) for b in v}
    mo, mn = st.median(r["old"]), st.median(r["new"])
    pair = [n / o for o, n in zip(r["old"], r["new"])]  # same round: same moment's load
    wins = f"{sum(x > 1 for x in pair)}/{len(pair)}"
    rng = " | ".join(f"{min(r[b]):.0f}-{max(r[b]):.0f}" for b in ("old", "new"))
    print(f"CORS {cors:4}{mo:7.0f}{mn:8.0f}{mn / mo:9.3f}{st.median(pair):8.3f}{wins:>9}  {rng:26}"
          f"{u['old']:8.1f}{u['new']:7.1f}")
print("paired: median of new/old within a round; new>old: rounds the new one won")
PY
