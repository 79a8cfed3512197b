#!/usr/bin/env python3
"""fp32 against bf16 from the run folders bench/precision_queue.sh writes: one JSON line (also
written to bench/results/precision_accuracy.json) and a markdown table on stderr.

- the 30-epoch CPU recipe on CIFAR-10-LT IR 100 (configs/bench/precision/c10lt_ir100_e30_*.toml),
  seeds 0-2: stage 1's last-epoch test top-1 and class-balanced cRT's (stage 2), mean ± std over
  the seeds, and stage 1's mean seconds per epoch (training and validation);
- the demo's recipe on a Tiny-ImageNet long tail (configs/bench/precision/tiny_demo_*.toml);
- the shipped best recipe at 200 epochs in bf16 (runs/precision_best), beside the fp32 seeds in
  bench/results/best_recipe_c10lt_ir100_e200_cpu.json.
A run that has not finished is left out and named in `missing`.

  python3 bench/precision_accuracy.py [--runs runs/precision] [--best runs/precision_best]
"""
import argparse, json, os, statistics, sys

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--runs", default="runs/precision")
p.add_argument("--best", default="runs/precision_best")
p.add_argument("--out", default=os.path.join(here, "results/precision_accuracy.json"))
p.add_argument("--timing-skip", default="", help="runs left out of the per-epoch timing (comma-separated folder names: runs that shared the CPU with other work)")
a = p.parse_args()
missing = []
skip = set(x for x in a.timing_skip.split(",") if x)


def load(run, name):
    path = os.path.join(run, name)
    if not os.path.isfile(path):
        missing.append(path)
        return None
    with open(path) as f:
        return json.load(f)


def per_epoch_s(run):
    path = os.path.join(run, "stage1/metrics.jsonl")
    with open(path) as f:
        secs = [json.loads(l)["seconds"] for l in f if l.strip()]
    # the median: a run paused for a benchmark has a few epochs with the pause inside
    return round(statistics.median(secs), 2)


def row(run):
    ev, s2 = load(run, "eval.json"), load(run, "stage2/eval.json")
    if ev is None or s2 is None:
        return None
    return {
        "stage1_test_top1": ev["last"]["test"]["top1"],
        "crt_class_balanced_test_top1": s2["crt_class_balanced"]["test"]["top1"],
        "model_classifier": s2["classifier"],
        "stage1_s_per_epoch_median": per_epoch_s(run),
    }


def mean_std(xs):
    return {"mean": round(statistics.mean(xs), 2), "std": round(statistics.stdev(xs), 2) if len(xs) > 1 else None, "n": len(xs)}


out = {"bench": "precision_accuracy", "machine": "AMD EPYC (avx512_bf16), 2 threads", "timing_skipped": sorted(skip),
       "c10lt_ir100_e30": {}, "tiny_demo": {}}
for prec in ("fp32", "bf16"):
    seeds = {}
    for s in (0, 1, 2):
        r = row(os.path.join(a.runs, f"c10lt_ir100_e30_{prec}_s{s}"))
        if r:
            seeds[s] = r
    if seeds:
        out["c10lt_ir100_e30"][prec] = {
            "by_seed": seeds,
            "stage1_test_top1": mean_std([r["stage1_test_top1"] for r in seeds.values()]),
            "crt_class_balanced_test_top1": mean_std([r["crt_class_balanced_test_top1"] for r in seeds.values()]),
            "stage1_s_per_epoch": mean_std([r["stage1_s_per_epoch_median"] for s, r in seeds.items()
                                            if f"c10lt_ir100_e30_{prec}_s{s}" not in skip] or [float("nan")]),
        }
    t = row(os.path.join(a.runs, f"tiny_demo_{prec}_s0"))
    if t:
        out["tiny_demo"][prec] = t
c = out["c10lt_ir100_e30"]
if "fp32" in c and "bf16" in c:
    for k in ("stage1_test_top1", "crt_class_balanced_test_top1"):
        d = round(c["bf16"][k]["mean"] - c["fp32"][k]["mean"], 2)
        c[f"{k}_bf16_minus_fp32"] = d
        c[f"{k}_within_0.5"] = abs(d) <= 0.5
    c["speedup_per_epoch"] = round(c["fp32"]["stage1_s_per_epoch"]["mean"] / c["bf16"]["stage1_s_per_epoch"]["mean"], 2)
best = os.path.join(a.best, "cifar10_lt_ir100_best_s0")
ev, s2 = load(best, "eval.json"), load(best, "stage2/eval.json")
if ev and s2:
    with open(os.path.join(here, "results/best_recipe_c10lt_ir100_e200_cpu.json")) as f:
        fp32 = json.load(f)
    by_seed = fp32.get("test_top1_by_seed", {})
    chosen = s2["classifier"].replace("-", "_")
    out["best_recipe_e200"] = {
        "bf16_stage1_test_top1": ev["last"]["test"]["top1"],
        "bf16_model_classifier": s2["classifier"],
        "bf16_logit_adjusted_test_top1": s2["logit_adjusted"]["test"]["top1"],
        "fp32_logit_adjusted_test_top1_by_seed": by_seed,
        "bf16_s_per_epoch_median": per_epoch_s(best),
    }
    if by_seed:
        lo, hi = min(by_seed.values()), max(by_seed.values())
        v = s2["logit_adjusted"]["test"]["top1"]
        out["best_recipe_e200"]["inside_fp32_range_pm_0.5"] = lo - 0.5 <= v <= hi + 0.5
out["missing"] = missing
with open(a.out, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(json.dumps(out))
ms = lambda m: f"{m['mean']:.2f} ± {m['std']:.2f}" if m["std"] is not None else f"{m['mean']:.2f}"
lines = ["| precision | stage 1 test top-1 | class-balanced cRT test top-1 | s / epoch | seeds |", "|---|---|---|---|---|"]
for prec in ("fp32", "bf16"):
    if prec in c:
        r = c[prec]
        lines.append(f"| {prec} | {ms(r['stage1_test_top1'])} | {ms(r['crt_class_balanced_test_top1'])} | {ms(r['stage1_s_per_epoch'])} | {', '.join(str(s) for s in r['by_seed'])} |")
print("\n".join(lines), file=sys.stderr)
