#!/usr/bin/env python3
"""Turns bench results into ratio tables (markdown, on stdout) and bench/results/chart.svg.

    python3 bench/report.py bench/results [CRITERION_DIR]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion or target/criterion; the criterion
figures are read from <group>/<bench>/new/estimates.json (median time per call) and
saved to bench/results/criterion.json.
"""
import json
import os
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "bench/results"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
crit_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")), "criterion")


def lines(name):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return []
    return [json.loads(l) for l in open(p) if l.strip().startswith("{")]


def criterion():
    res = {}
    if os.path.isdir(crit_dir):
        for group in ("hit", "miss", "layer", "threads"):
            gdir = os.path.join(crit_dir, group)
            if not os.path.isdir(gdir):
                continue
            for bench in os.listdir(gdir):
                est = os.path.join(gdir, bench, "new", "estimates.json")
                if os.path.exists(est):
                    e = json.load(open(est))
                    res[f"{group}/{bench}"] = e["median"]["point_estimate"]  # ns per iteration
    path = os.path.join(out, "criterion.json")
    if res:
        json.dump(res, open(path, "w"), indent=1, sort_keys=True)
    elif os.path.exists(path):
        res = json.load(open(path))
    return res


rows = []  # (figure, measured, target, ok)


def check(name, value, target, ok, fmt="{:.2f}"):
    rows.append((name, fmt.format(value), target, "yes" if ok else "**no**"))


c = criterion()
if c:
    print("### Criterion (median ns per call)\n")
    print("| bench | ns/call |\n|---|---:|")
    for k in sorted(c):
        print(f"| {k} | {c[k]:.1f} |")
    print()
    g = c.get
    if g("hit/paragon") and g("hit/limit"):
        check("hit: full stack / limit (time per call)", g("hit/paragon") / g("hit/limit"), "≤ 2.0", g("hit/paragon") / g("hit/limit") <= 2.0)
    for peer in ("tower_resilience", "moka_governor_recloser"):
        if g(f"hit/{peer}") and g("hit/paragon"):
            r = g("hit/paragon") / g(f"hit/{peer}")
            check(f"hit: full stack / {peer}", r, "≤ 0.5", r <= 0.5)
        if g(f"miss/{peer}") and g("miss/paragon") and g("miss/limit"):
            ours = g("miss/paragon") - g("miss/limit")
            theirs = g(f"miss/{peer}") - g("miss/limit")
            r = ours / theirs
            check(f"miss overhead: full stack / {peer} (over the no-op)", r, "≤ 1.0", r <= 1.0)
    if g("threads/paragon_1") and g("threads/paragon_2"):
        # each thread runs the same number of calls: throughput ratio = 2·t1/t2
        r = 2 * g("threads/paragon_1") / g("threads/paragon_2")
        check("hit throughput: 2 threads / 1 thread", r, "≥ 1.8", r >= 1.8)
    if g("threads/limit_1") and g("threads/limit_2"):
        r = 2 * g("threads/limit_1") / g("threads/limit_2")
        rows.append(("(limit) DashMap: 2 threads / 1 thread", f"{r:.2f}", "—", "—"))
    if g("threads/unshared_1") and g("threads/unshared_2"):
        r = 2 * g("threads/unshared_1") / g("threads/unshared_2")
        rows.append(("(machine ceiling) a map per thread, nothing shared: 2 threads / 1 thread", f"{r:.2f}", "—", "—"))

def medians(records):
    """One row per server: the median of each figure over its interleaved rounds."""
    by = {}
    for r in records:
        by.setdefault(r["server"], []).append(r)
    out = {}
    for n, rs in by.items():
        row = {k: statistics.median(r[k] for r in rs)
               for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
        row["non_2xx"] = sum(r["non_2xx"] for r in rs)
        row["rounds"] = len(rs)
        row["rps_range"] = (min(r["rps"] for r in rs), max(r["rps"] for r in rs))
        out[n] = row
    return out


http = medians(lines("http.jsonl"))
if http:
    print("### HTTP (wrk, server pinned to one core; median of interleaved rounds)\n")
    print("| server | rounds | req/s (median) | req/s (min–max) | p50 ms | p99 ms | CPU µs/req | non-2xx |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in http.items():
        lo, hi = r["rps_range"]
        print(f"| {n} | {r['rounds']} | {r['rps']:.0f} | {lo:.0f}–{hi:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['cpu_us_per_req']:.2f} | {r['non_2xx']} |")
    print()
    e, b, n = http.get("edge"), http.get("bare"), http.get("nginx")
    if e and b:
        check("HTTP hits: edge / bare axum req/s", e["rps"] / b["rps"], "≥ 0.9", e["rps"] / b["rps"] >= 0.9)
        check("HTTP hits: edge / bare axum CPU per request", e["cpu_us_per_req"] / b["cpu_us_per_req"], "≤ 1.15", e["cpu_us_per_req"] / b["cpu_us_per_req"] <= 1.15)
    if e and n:
        check("HTTP hits: edge / nginx proxy_cache req/s", e["rps"] / n["rps"], "≥ 1.4", e["rps"] / n["rps"] >= 1.4)
        check("HTTP hits: edge p99 / nginx p99", e["p99_ms"] / n["p99_ms"], "≤ 1.0", e["p99_ms"] <= n["p99_ms"])
    ec, nc = http.get("edge-cors"), http.get("nginx-cors")
    if ec and nc:
        check("HTTP hits, CORS on in both: edge / nginx req/s", ec["rps"] / nc["rps"], "≥ 1.4", ec["rps"] / nc["rps"] >= 1.4)
    e9, n9 = http.get("edge-90pct-hits"), http.get("nginx-90pct-hits")
    if e9 and n9:
        rows.append(("HTTP 90 % hits: edge / nginx req/s", f"{e9['rps'] / n9['rps']:.2f}", "—", "—"))

instr = {r["server"]: r for r in lines("instructions.jsonl")}
if instr.get("edge") and instr.get("bare"):
    e, b = instr["edge"]["instructions_per_req"], instr["bare"]["instructions_per_req"]
    rows.append((f"HTTP hits, user-space instructions per request (callgrind): edge / bare axum = {e:,.0f} / {b:,.0f}",
                 f"{e / b:.2f}", "(≤ 1.15 for CPU)", "—"))

for s in lines("stress.jsonl"):
    if s["scenario"] == "overload":
        check(f"10× overload: upstream calls vs budget+burst ({s['upstream_calls']} / {s['budget_plus_burst']})",
              s["upstream_calls"] / s["budget_plus_burst"], "≤ 1.0", s["ok"])
    elif s["scenario"] == "stampede":
        rows.append((f"stampede: upstream calls per cold key ({s['keys']} keys × 500)",
                     f"{s['upstream_calls_per_key_min']}–{s['upstream_calls_per_key_max']}", "exactly 1",
                     "yes" if s["ok"] else "**no**"))
    elif s["scenario"] == "churn":
        check(f"RSS after {s['ids']:,} ids / (2×100k users + 32 MiB) = {s['rss_after_churn_mib']:.0f} / {s['limit_mib']:.0f} MiB",
              s["rss_after_churn_mib"] / s["limit_mib"], "≤ 1.0", s["ok"])

for r in lines("redis.jsonl"):
    if "skipped" in r:
        rows.append(("Redis limiter", r["skipped"], "—", "—"))
    else:
        mode = r.get("mode", "standalone")
        rows.append((f"Redis ({mode}) limiter added latency p50 / p99 (µs)",
                     f"{r['added_p50_us']:.1f} / {r['added_p99_us']:.1f}", "(measure)", "—"))
        if "l2_hit_p50_us" in r:
            rows.append((f"Redis ({mode}) L2 hit p50 / p99 (µs)",
                         f"{r['l2_hit_p50_us']:.1f} / {r['l2_hit_p99_us']:.1f}", "(measure)", "—"))

if rows:
    print("### Targets\n")
    print("| figure | measured | target | met |\n|---|---:|---:|:---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


# ---------------------------------------------------------------- chart
def bar_chart(title, items, unit, x0, y0, width):
    """items: [(label, value)] -> svg fragment and height."""
    if not items:
        return "", 0
    vmax = max(v for _, v in items) or 1
    h = 22
    parts = [f'<text x="{x0}" y="{y0 + 14}" font-weight="bold">{title}</text>']
    y = y0 + 24
    for label, v in items:
        w = (width - 260) * v / vmax
        parts.append(f'<text x="{x0}" y="{y + 15}">{label}</text>')
        parts.append(f'<rect x="{x0 + 170}" y="{y + 3}" width="{w:.1f}" height="{h - 6}" fill="#4a7bd0"/>')
        parts.append(f'<text x="{x0 + 175 + w:.1f}" y="{y + 15}">{v:,.1f} {unit}</text>')
        y += h
    return "\n".join(parts), y - y0 + 10


sections = []
if c:
    sections.append(("Cache hit, ns per call (lower is better)", [
        (k.split("/", 1)[1], c[k]) for k in ("hit/limit", "hit/limit_as_service", "hit/paragon", "hit/paragon_cache", "hit/tower_resilience", "hit/moka_governor_recloser") if k in c], "ns"))
    sections.append(("Cache miss, ns per call (lower is better)", [
        (k.split("/", 1)[1], c[k]) for k in ("miss/limit", "miss/paragon", "miss/paragon_cache", "miss/tower_resilience", "miss/moka_governor_recloser") if k in c], "ns"))
if http:
    sections.append(("HTTP, requests/s (higher is better)", [(n, r["rps"]) for n, r in http.items()], "req/s"))
    sections.append(("HTTP, server CPU µs per request (lower is better)", [(n, r["cpu_us_per_req"]) for n, r in http.items()], "µs"))
if sections:
    width, y, body = 760, 10, []
    for title, items, unit in sections:
        frag, h = bar_chart(title, items, unit, 10, y, width)
        body.append(frag)
        y += h + 10
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
           f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>\n'
           + "\n".join(body) + "\n</svg>\n")
    open(os.path.join(out, "chart.svg"), "w").write(svg)
    print(f"chart: {os.path.join(out, 'chart.svg')}", file=sys.stderr)
