#!/usr/bin/env python3
"""Turns the logs of one `scripts/gpu-test.sh bench-gpu` run into rows of docs/benchmarks/results.jsonl.

usage: python3 scripts/bench_results.py LOG_DIR --run NAME [--date YYYY-MM-DD] [--append]

LOG_DIR holds what bench-gpu wrote: tiergen-opt-6.7b.txt and tiergen-llama-2-7b.txt (tiergen's log
with one JSON line per batch size), hf-opt-6.7b.txt (transformers), flexgen.txt and fg_CASE.log
(upstream FlexGen). Without --append the rows are printed; with it they are added to the JSONL.

Scenarios: opt-6.7b-gpu-b32 (every system at batch 32), opt-6.7b-gpu-best (each system at the batch
size that gave it the most total throughput in this run), opt-6.7b-gpu-bN (the other batch sizes),
llama-2-7b-gpu. The roofline bound of a row is the one tiergen computed in the same run for the same
workload (batch, prompt, gen), from the GEMM and memory read rates it measured there: a baseline's
row gets the bound of tiergen's row at its batch size, or null where tiergen did not run that batch.
FlexGen prints its memory in GiB (2^30 bytes) under the name GB; tiergen and transformers in 1e9."""
import argparse
import datetime
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs/benchmarks/results.jsonl"
PROMPT, GEN = 512, 32


def flexgen_style(text):
    """prefill / decode / total throughput and peak GPU memory (in the log's GB) from FlexGen-format lines."""
    got = {}
    for key, pat in (("prefill", r"prefill throughput: ([\d.]+)"), ("decode", r"decode throughput: ([\d.]+)"),
                     ("total", r"total throughput: ([\d.]+)"), ("peak_gb", r"peak gpu mem: ([\d.]+) GB")):
        m = re.search(pat, text)
        if m:
            got[key] = float(m.group(1))
    return got


def row(scenario, system, device, model, batch, prefill, decode, total, peak_bytes, bound, date, command, run):
    """`bound`: tiergen's JSON line for the same workload in this run (its roofline and rates), or None."""
    return {"scenario": scenario, "system": system, "device": device, "model": model,
            "policy": {"gpu_batch_size": batch, "num_gpu_batches": 1, "dtype": "float16", "placement": "all on the GPU"},
            "prompt_len": PROMPT, "gen_len": GEN, "prefill_throughput": round(prefill, 3),
            "decode_throughput": round(decode, 3), "total_throughput": round(total, 3),
            "peak_gpu_bytes": peak_bytes,
            "roofline_total_throughput": round(bound["roofline_total_tokens_per_s"], 3) if bound else None,
            "roofline_rates": {"gemm_flops_per_s": round(bound["gemm_flops_per_s"]),
                               "read_bytes_per_s": round(bound["read_bytes_per_s"])} if bound else None,
            "date": date, "command": command, "run": run}


def tiergen_runs(path):
    runs = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            runs.append(json.loads(line))
    return runs


def label(model, batch, best_batch):
    if model == "llama-2-7b":
        return "llama-2-7b-gpu"
    if batch == best_batch and batch != 32:
        return "opt-6.7b-gpu-best"
    return f"opt-6.7b-gpu-b{batch}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("log_dir", type=pathlib.Path)
    p.add_argument("--run", required=True)
    p.add_argument("--date", default=datetime.date.today().isoformat())
    p.add_argument("--append", action="store_true")
    a = p.parse_args()
    d = a.log_dir
    rows = []
    bounds = {}  # (model, batch) -> tiergen's JSON line (roofline and rates) for that workload
    device = None
    for model in ("opt-6.7b", "llama-2-7b"):
        f = d / f"tiergen-{model}.txt"
        if not f.exists():
            continue
        runs = tiergen_runs(f)
        batches = ",".join(str(r["batch_size"]) for r in runs)
        best = max(runs, key=lambda r: r["total_tokens_per_s"])["batch_size"]
        for r in runs:
            device = r["device"].split(" ", 1)[1] if r["device"].startswith("cuda") else r["device"]
            bounds[(model, r["batch_size"])] = r if "roofline_total_tokens_per_s" in r else None
            rows.append(row(label(model, r["batch_size"], best), "tiergen", device, model, r["batch_size"],
                            r["prefill_tokens_per_s"], r["decode_tokens_per_s"], r["total_tokens_per_s"],
                            r.get("peak_gpu_bytes"), bounds[(model, r["batch_size"])], a.date,
                            f"tiergen bench --device cuda --dummy {model} --batch-size {batches} --prompt-len {PROMPT} "
                            f"--gen-len {GEN} --json (scripts/gpu-test.sh bench-gpu)", a.run))
            if model == "opt-6.7b" and r["batch_size"] == best and best == 32:
                rows.append(dict(rows[-1], scenario="opt-6.7b-gpu-best"))

    hf = d / "hf-opt-6.7b.txt"
    if hf.exists():
        g = flexgen_style(hf.read_text())
        if "total" in g:
            rows.append(row("opt-6.7b-gpu-b32", "transformers", device, "opt-6.7b", 32, g["prefill"], g["decode"],
                            g["total"], round(g["peak_gb"] * 1e9) if "peak_gb" in g else None,
                            bounds.get(("opt-6.7b", 32)), a.date,
                            "python3 tests/bench/hf_baseline.py --model opt-6.7b --device cuda --batch 32 "
                            "--dtype float16", a.run))

    fg = d / "flexgen.txt"
    if fg.exists():
        found = []
        for m in re.finditer(r"^=== (\S+): (.*)$", fg.read_text(), re.M):
            case, args = m.group(1), m.group(2)
            log = d / f"fg_{case}.log"
            if not log.exists():
                print(f"{case}: no {log.name} (the case failed?)", file=sys.stderr)
                continue
            g = flexgen_style(log.read_text())
            batch = int(re.search(r"--gpu-batch-size (\d+)", args).group(1))
            if "total" in g:
                found.append((batch, g, args))
        if found:
            best = max(found, key=lambda f: f[1]["total"])[0]
            for batch, g, args in found:
                scen = [label("opt-6.7b", batch, best)] + (["opt-6.7b-gpu-best"] if batch == best == 32 else [])
                for s in scen:
                    rows.append(row(s, "flexgen", device, "opt-6.7b", batch, g["prefill"], g["decode"], g["total"],
                                    round(g["peak_gb"] * 2**30) if "peak_gb" in g else None,
                                    bounds.get(("opt-6.7b", batch)), a.date,
                                    f"python3 -m flexgen.flex_opt --path _DUMMY_ {args}", a.run))

    text = "".join(json.dumps(r) + "\n" for r in rows)
    if a.append:
        with RESULTS.open("a") as f:
            f.write(text)
        print(f"{len(rows)} rows added to {RESULTS.relative_to(ROOT)}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
