#!/usr/bin/env python3
"""Summarises a trace written by `tiergen generate|bench --trace FILE`: for each step (the "steps"
track's spans) how long each other track (compute, H2D, D2H, disk I/O, CPU attention) was busy, as
time and as a share of the step, and how much of each transfer track's busy time overlapped compute.
Overlapping spans on one track are counted once. Prints one line per kind of step (prefill steps
and decode steps, told apart by their token count: a decode step has one token per sequence) with
the mean over those steps, then the slowest decode step. A merged trace of a pipeline (one process
per stage) is summarised stage by stage.

usage: scripts/trace_summary.py TRACE.json
"""
import argparse
import json
import sys
from collections import defaultdict


def merge(intervals):
    """Sorted, disjoint union of [begin, end) intervals."""
    out = []
    for b, e in sorted(intervals):
        if out and b <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([b, e])
    return out


def clipped_length(union, lo, hi):
    return sum(max(0.0, min(e, hi) - max(b, lo)) for b, e in union)


def intersect_length(a, b, lo, hi):
    """Length of the intersection of two unions within [lo, hi)."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0], lo), min(a[i][1], b[j][1], hi)
        if e > s:
            total += e - s
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def load(path):
    """{process name: {track: [(begin, end, name)]}}, in process id order."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"trace_summary: cannot read {path}: {e}")
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    names, processes = {}, {}
    spans = defaultdict(lambda: defaultdict(list))
    for ev in events:
        if ev.get("ph") == "M" and ev.get("name") == "thread_name":
            names[(ev.get("pid"), ev["tid"])] = ev["args"]["name"]
        elif ev.get("ph") == "M" and ev.get("name") == "process_name":
            processes[ev.get("pid")] = ev["args"]["name"]
    for ev in events:
        if ev.get("ph") == "X":
            track = names.get((ev.get("pid"), ev["tid"]), str(ev["tid"]))
            spans[ev.get("pid")][track].append(
                (float(ev["ts"]), float(ev["ts"]) + float(ev.get("dur", 0)), ev.get("name", "")))
    return {processes.get(pid, f"process {pid}"): spans[pid] for pid in sorted(spans, key=str)}


def summarise(spans, where):
    steps = sorted(spans.pop("steps", []))
    if not steps:
        sys.exit(f"trace_summary: {where} has no 'steps' track (was it written by tiergen --trace?)")
    unions = {t: merge([(b, e) for b, e, _ in s]) for t, s in spans.items()}
    tracks = sorted(unions)
    compute = unions.get("compute", [])

    def tokens(name):
        try:
            return int(name.split()[2])
        except (IndexError, ValueError):
            return 0

    fewest = min(tokens(n) for _, _, n in steps)
    kinds = defaultdict(list)
    for b, e, n in steps:
        kinds["decode" if tokens(n) == fewest and len(steps) > 1 else "prefill"].append((b, e, n))

    def row(label, group):
        dur = sum(e - b for b, e, _ in group) / len(group)
        cells = []
        for t in tracks:
            busy = sum(clipped_length(unions[t], b, e) for b, e, _ in group) / len(group)
            cell = f"{t} {busy / 1e3:.1f} ms ({100 * busy / dur:.0f}%)"
            if t != "compute" and compute and busy > 0:
                both = sum(intersect_length(unions[t], compute, b, e) for b, e, _ in group) / len(group)
                cell += f", {100 * both / busy:.0f}% under compute"
            cells.append(cell)
        print(f"{label}: {dur / 1e3:.1f} ms; " + "; ".join(cells))

    for kind in ("prefill", "decode"):
        if kinds[kind]:
            row(f"{kind} ({len(kinds[kind])} steps, mean)", kinds[kind])
    if kinds["decode"]:
        slowest = max(kinds["decode"], key=lambda s: s[1] - s[0])
        row("slowest decode step", [slowest])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    args = ap.parse_args()
    processes = load(args.trace)
    if not processes:
        sys.exit(f"trace_summary: {args.trace} has no 'steps' track (was it written by tiergen --trace?)")
    for name, spans in processes.items():
        if len(processes) > 1:
            print(f"{name}:")
        summarise(spans, args.trace if len(processes) == 1 else f"{args.trace} ({name})")


if __name__ == "__main__":
    main()
