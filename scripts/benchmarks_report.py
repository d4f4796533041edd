#!/usr/bin/env python3
"""Rebuilds the GPU section of docs/benchmarks.md and docs/benchmarks/total-throughput.svg from
docs/benchmarks/results.jsonl (one JSON object per reported run: ours and the baselines').

usage: python3 scripts/benchmarks_report.py        (standard library only)

The table lists every run by scenario, with each system's ratio to FlexGen in the same scenario and,
where the row carries one, the share of the roofline bound. The text between the two marker lines
in docs/benchmarks.md is replaced; everything else in the file is left alone. Rows of kind
"coordinator-load" (tests/load/coordinator_load.cc) make their own table, between their own markers."""
import json
import pathlib
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs/benchmarks/results.jsonl"
DOC = ROOT / "docs/benchmarks.md"
SVG = ROOT / "docs/benchmarks/total-throughput.svg"
OFFLOAD_SVG = ROOT / "docs/benchmarks/offload-throughput.svg"
BEGIN, END = "<!-- results.jsonl: begin (scripts/benchmarks_report.py) -->", "<!-- results.jsonl: end -->"
LOAD_BEGIN = "<!-- results.jsonl coordinator-load: begin (scripts/benchmarks_report.py) -->"
LOAD_END = "<!-- results.jsonl coordinator-load: end -->"


def load():
    rows = []
    for n, line in enumerate(RESULTS.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{RESULTS}:{n}: not JSON: {e}")
    return rows


def table(rows):
    # Ratios compare systems measured in the same run (one command on one host) only.
    by_scenario = defaultdict(list)
    for r in rows:
        by_scenario[(r.get("run", r["date"]), r["scenario"])].append(r)
    out = ["| run | scenario | system | batch | prefill tok/s | decode tok/s | total tok/s | vs FlexGen | "
           "of roofline | peak GPU GB | device |", "|" + "---|" * 11]
    for key in sorted(by_scenario):
        run, scenario = key
        runs = by_scenario[key]
        flexgen = next((r for r in runs if r["system"] == "flexgen"), None)
        for r in sorted(runs, key=lambda r: -r["total_throughput"]):
            ratio = f"{r['total_throughput'] / flexgen['total_throughput']:.2f}x" if flexgen else "-"
            roof = r.get("roofline_total_throughput")
            share = f"{100 * r['total_throughput'] / roof:.0f}%" if roof else "not measured"
            peak = r.get("peak_gpu_bytes")
            peak_gb = f"{peak / 1e9:.1f}" if peak else "-"
            out.append(f"| {run} | {scenario} | {r['system']} | {r['policy'].get('gpu_batch_size', '-')} | "
                       f"{r['prefill_throughput']:.0f} | {r['decode_throughput']:.0f} | {r['total_throughput']:.1f} | "
                       f"{ratio} | {share} | {peak_gb} | {r['device']} |")
    return "\n".join(out)


def load_table(rows):
    out = ["| run | clients | synthetic workers | seconds | jobs (lines each) | submitted lines/s | GetJob calls | "
           "GetJob p50 ms | p99 ms | max ms | errors | device |", "|" + "---|" * 12]
    for r in sorted(rows, key=lambda r: r["run"]):
        out.append(f"| {r['run']} | {r['clients']} | {r['workers']} | {r['seconds']:.0f} | {r['jobs']} ({r['lines_per_job']}) | "
                   f"{r['submitted_lines_per_second']:.0f} | {r['get_job_calls']} | {r['get_job_p50_ms']:.2f} | "
                   f"{r['get_job_p99_ms']:.2f} | {r['get_job_max_ms']:.1f} | {r['errors']} | {r['device']} |")
    return "\n".join(out)


def replace_section(doc, begin, end, body):
    section = f"{begin}\n{body}\n{end}"
    if begin in doc and end in doc:
        return doc[:doc.index(begin)] + section + doc[doc.index(end) + len(end):]
    return doc.rstrip("\n") + "\n\n" + section + "\n"


def offloaded(r):
    # Offloading runs report host memory too; the all-on-GPU ones predate that field.
    return "peak_cpu_bytes" in r


def svg(rows, title):
    # One horizontal bar per run, total throughput, grouped by scenario.
    latest = max(r.get("run", r["date"]) for r in rows)  # the plot shows the latest run
    rows = sorted((r for r in rows if r.get("run", r["date"]) == latest),
                  key=lambda r: (r["scenario"], -r["total_throughput"]))
    colors = {"tiergen": "#2b6cb0", "flexgen": "#dd6b20", "transformers": "#718096"}
    width, bar, gap, left = 760, 22, 8, 300
    top = 40
    height = top + len(rows) * (bar + gap) + 30
    vmax = max(r["total_throughput"] for r in rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="12">',
             f'<text x="10" y="20" font-size="14">{title}, total tokens/s (prompt 512, 32 generated; '
             f'run {latest})</text>']
    for i, r in enumerate(rows):
        y = top + i * (bar + gap)
        w = (width - left - 80) * r["total_throughput"] / vmax
        label = f"{r['scenario']} · {r['system']} · b{r['policy'].get('gpu_batch_size', '?')}"
        parts.append(f'<text x="{left - 8}" y="{y + bar * 0.7}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" '
                     f'fill="{colors.get(r["system"], "#4a5568")}"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + bar * 0.7}">{r["total_throughput"]:.0f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    everything = load()
    loads = [r for r in everything if r.get("kind") == "coordinator-load"]
    rows = [r for r in everything if r.get("kind") != "coordinator-load"]
    SVG.write_text(svg([r for r in rows if not offloaded(r)], "All on the GPU"))
    plots = f"![Total throughput, all on the GPU](benchmarks/{SVG.name})"
    if any(offloaded(r) for r in rows):
        OFFLOAD_SVG.write_text(svg([r for r in rows if offloaded(r)], "Offloading"))
        plots += f"\n\n![Total throughput, offloading](benchmarks/{OFFLOAD_SVG.name})"
    doc = replace_section(DOC.read_text(), BEGIN, END, f"{table(rows)}\n\n{plots}")
    if loads:
        doc = replace_section(doc, LOAD_BEGIN, LOAD_END, load_table(loads))
    DOC.write_text(doc)
    print(f"{DOC.relative_to(ROOT)} and {SVG.relative_to(ROOT)} rebuilt from {len(everything)} runs")


if __name__ == "__main__":
    main()
