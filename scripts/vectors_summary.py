#!/usr/bin/env python3
"""Summary of scripts/bench-vectors.sh: reads the cluster's JSON lines
(orrery-bench vectors) and hnswlib's (vectors_hnswlib.py), prints the
ratio lines as JSON on stdout and a readable summary on stderr (also
written to SUMMARY if given).

At equal recall: for each side the cheapest ef (the smallest in the sweep)
whose recall@10 reaches 0.95; the ratios are Orrery 1 client / hnswlib
1 thread and Orrery 16 clients / hnswlib all cores (queries/s), for each
consistency level measured.
    vectors_summary.py ORRERY.jsonl HNSWLIB.jsonl LOAD_BEFORE LOAD_AFTER [SUMMARY]
"""
import json, sys

TARGET = 0.95


def lines(path):
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def cheapest(cells):
    ok = sorted((c for c in cells if c["recall_at_10"] >= TARGET), key=lambda c: c["ef"])
    return ok[0] if ok else None


def main():
    ours, base = lines(sys.argv[1]), lines(sys.argv[2])
    load_before, load_after = sys.argv[3], sys.argv[4]
    head = next(o for o in ours if o.get("bench") == "vectors")
    load = next(o for o in ours if o.get("phase") == "load")
    search = [o for o in ours if o.get("phase") == "search"]
    filtered = [o for o in ours if o.get("phase") == "filtered"]
    hb = next(b for b in base if "build_s_1thread" in b)
    h1 = [b for b in base if b.get("threads") == 1]
    hall = [b for b in base if "threads" in b and b["threads"] != 1] or h1
    cores = hb["cores"]
    w = []
    m = head["machine"]
    w.append(f"Vectors benchmark: {head['source']}")
    w.append(f"  machine: {m.get('cpus')} cpus ({m.get('cpu_model')}), {m.get('mem_total_mib')} MiB, "
             f"{m.get('kernel')}; load average before {load_before}, after {load_after}")
    w.append(f"  N {head['n']} x {head['dim']}, {head['queries']} queries, l2, M {head['m']}, "
             f"ef_construction {head['ef_construction']}; {head['nodes']} nodes, collection shards "
             f"{head['collection_shards']}, {m.get('security')}, REST")
    ratios = []
    # Build.
    per_node = load["inserts_per_s_per_node"]
    w.append(f"\nBuild: {head['n']} points acknowledged in {load['load_s']} s; indexes ready on every "
             f"replica after {load['indexed_s']} s (per node {load['ready_s_per_node']}) = "
             f"{per_node:.0f} inserts/s per node")
    w.append(f"  hnswlib: 1 thread {hb['build_s_1thread']} s ({hb['inserts_per_s_1thread']:.0f}/s), "
             f"{cores} threads {hb['build_s_allcores']} s ({hb['inserts_per_s_allcores']:.0f}/s)")
    for label, ref in [("hnswlib_1thread", hb["inserts_per_s_1thread"]),
                       ("hnswlib_allcores", hb["inserts_per_s_allcores"])]:
        ratios.append({"ratio": f"build: orrery_per_node / {label}", "value": round(per_node / ref, 3)})
    # The nodes share the machine's cores, so each builds with a fraction
    # of them: per CPU-second spent (everything a node did from the first
    # write to index ready) against hnswlib on 1 thread (1 CPU-second/s).
    per_cpu = load.get("inserts_per_node_cpu_s")
    if per_cpu:
        w.append(f"  node CPU from first write to ready: {load['build_cpu_s_per_node']} s per node = "
                 f"{per_cpu:.0f} inserts per node CPU-second; hnswlib 1 thread "
                 f"{hb['inserts_per_s_1thread']:.0f} per CPU-second = "
                 f"{per_cpu / hb['inserts_per_s_1thread']:.3f}x")
        ratios.append({"ratio": "build: orrery_per_node_cpu_s / hnswlib_1thread_per_cpu_s",
                       "value": round(per_cpu / hb["inserts_per_s_1thread"], 3)})
    if load.get("leaders"):
        w.append("  leaders: " + ", ".join(f"{l['group']} node {l['leader']}" for l in load["leaders"]))
    # Memory.
    bpp = load["rss_bytes_per_point_per_node"]
    w.append(f"\nMemory per point: node RSS growth / N = {', '.join(f'{x:.0f}' for x in bpp)} bytes "
             f"(per node); hnswlib index {hb['index_bytes_per_point']:.0f} bytes (saved size), "
             f"process RSS growth {hb['rss_bytes_per_point']:.0f} bytes; the raw vector is {4 * head['dim']} bytes")
    # Sweep.
    w.append("\n  ef | recall | lin 1c qps (p50/p99 ms) | lin 16c qps | stale 1c qps | stale 16c qps "
             "| took_ms lin/stale 1c | node CPU ms/q lin/stale 1c | hnswlib recall | 1 thread qps | "
             f"{cores} threads qps")
    efs = sorted({o["ef"] for o in search} | {b["ef"] for b in h1})
    cell = {(o["consistency"], o["clients"], o["ef"]): o for o in search}
    hcell1 = {b["ef"]: b for b in h1}
    hcella = {b["ef"]: b for b in hall}
    f = lambda v, fmt="{:.0f}": "-" if v is None else fmt.format(v)
    for ef in efs:
        l1, l16 = cell.get(("linearizable", 1, ef)), cell.get(("linearizable", 16, ef))
        s1, s16 = cell.get(("stale", 1, ef)), cell.get(("stale", 16, ef))
        rec = (l1 or s1 or l16 or s16 or {}).get("recall_at_10")
        g = lambda c, k: c.get(k) if c else None
        b1, ba = hcell1.get(ef), hcella.get(ef)
        w.append(f"  {ef:>4} | {f(rec, '{:.3f}')} | {f(g(l1, 'qps'))} ({f(g(l1, 'p50_ms'), '{:.2f}')}/"
                 f"{f(g(l1, 'p99_ms'), '{:.2f}')}) | {f(g(l16, 'qps'))} | {f(g(s1, 'qps'))} | {f(g(s16, 'qps'))} | "
                 f"{f(g(l1, 'server_took_ms'), '{:.3f}')}/{f(g(s1, 'server_took_ms'), '{:.3f}')} | "
                 f"{f(g(l1, 'node_cpu_ms_per_query'), '{:.3f}')}/{f(g(s1, 'node_cpu_ms_per_query'), '{:.3f}')} | "
                 f"{f(g(b1, 'recall_at_10'), '{:.3f}')} | {f(g(b1, 'qps'))} | {f(g(ba, 'qps'))}")
    # Equal recall.
    hb1, hba = cheapest(h1), cheapest(hall)
    w.append(f"\nAt equal recall (cheapest ef with recall@10 >= {TARGET}):")
    w.append(f"  hnswlib: 1 thread ef {hb1 and hb1['ef']} ({f(hb1 and hb1['qps'])}/s), "
             f"{cores} threads ef {hba and hba['ef']} ({f(hba and hba['qps'])}/s)")
    for cons in sorted({o["consistency"] for o in search}):
        for clients, ref, label, goal in [(1, hb1, "hnswlib_1thread", 0.25), (16, hba, "hnswlib_allcores", 0.5)]:
            o = cheapest([c for c in search if c["consistency"] == cons and c["clients"] == clients])
            value = round(o["qps"] / ref["qps"], 4) if o and ref else None
            ratios.append({"ratio": f"orrery_{clients}client{'s' if clients > 1 else ''}_{cons} / {label}",
                           "orrery_ef": o and o["ef"], "orrery_qps": o and o["qps"],
                           "orrery_recall": o and o["recall_at_10"], "hnswlib_ef": ref and ref["ef"],
                           "hnswlib_qps": ref and ref["qps"], "hnswlib_recall": ref and ref["recall_at_10"],
                           "value": value, "acceptance": goal,
                           "met": value is not None and value >= goal})
            w.append(f"  {cons:>12}, {clients:>2} client(s): ef {o and o['ef']} {f(o and o['qps'])}/s "
                     f"(recall {f(o and o['recall_at_10'], '{:.3f}')}) / {label} = "
                     f"{f(value, '{:.3f}')}x (acceptance >= {goal}x: {'met' if value and value >= goal else 'NOT met'})")
    b = next(r for r in ratios if r["ratio"].endswith("hnswlib_allcores") and r["ratio"].startswith("build"))
    w.append(f"  build per node / hnswlib all cores = {b['value']:.3f}x, / 1 thread = "
             f"{ratios[0]['value']:.3f}x (acceptance >= 0.5x)")
    # Filtered.
    if filtered:
        w.append("\nFiltered (linearizable):")
        for o in filtered:
            u = cell.get(("linearizable", o["clients"], o["ef"]))
            rel = o["qps"] / u["qps"] if u else None
            w.append(f"  {o['filter']:>10} ({o['selectivity']:.0%}), ef {o['ef']}, {o['clients']:>2} client(s): "
                     f"recall {o['recall_at_10']:.3f}, {o['qps']:.0f}/s (p50 {o['p50_ms']:.2f} ms, took "
                     f"{o['server_took_ms']:.3f} ms), {f(rel, '{:.2f}')}x unfiltered")
            ratios.append({"ratio": f"filtered {o['filter']} / unfiltered, {o['clients']} clients, ef {o['ef']}",
                           "recall": o["recall_at_10"], "value": rel and round(rel, 3)})
    for r in ratios:
        print(json.dumps(r))
    text = "\n".join(w) + "\n"
    sys.stderr.write("\n" + text)
    if len(sys.argv) > 5:
        open(sys.argv[5], "w").write(text)


if __name__ == "__main__":
    main()
