#!/usr/bin/env python3
"""Runs bench-train-throughput (autosampler as a user gets it: the library's defaults, or the
flags after `--`) and `torch_reference.py bench` twice, fp32 eager and bf16 autocast +
channels-last (what a PyTorch user turns on first), alternately, N times each, with the same
network (ResNet-32), batch and threads. Prints one JSON line with the medians and the ratios
autosampler / PyTorch fp32 and autosampler / PyTorch's best.

  eval "$(./x env)"; python bench/train_throughput.py --threads 2 --repeats 3 [--device cuda] [-- --precision fp32]
"""
import argparse, json, os, resource, statistics, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--steps", type=int, default=20)
p.add_argument("--device", default="cpu")
p.add_argument("--binary", default=os.path.join(here, "../target/release/bench-train-throughput"))
p.add_argument("--reference", default=os.path.join(here, "../../shared/bench/torch_reference.py"))
a, extra = p.parse_known_args()
extra = [x for x in extra if x != "--"]
common = ["--threads", str(a.threads), "--steps", str(a.steps), "--device", a.device]


def last_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_peak_mb():
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


ours, fp32, best = [], [], []
for _ in range(a.repeats):
    ours.append(last_json([a.binary, *common, *extra]))
    fp32.append(last_json([sys.executable, a.reference, "bench", *common]))
    best.append(last_json([sys.executable, a.reference, "bench", *common, "--bf16", "--channels-last"]))
    best[-1]["peak_rss_mb"] = child_peak_mb()  # max over every child so far (an upper bound)
med = lambda rs, k: statistics.median(r[k] for r in rs)
ratio = lambda k, rs: round(med(ours, k) / med(rs, k), 3)
res = {
    "bench": "train_throughput", "network": "resnet32", "batch": 128, "threads": a.threads,
    "device": a.device, "repeats": a.repeats, "autosampler_flags": " ".join(extra) or "(defaults)",
    "autosampler_precision": ours[0].get("precision"), "autosampler_channels_last": ours[0]["channels_last"],
    "autosampler_train_img_per_s": med(ours, "train_img_per_s"),
    "torch_fp32_train_img_per_s": med(fp32, "train_img_per_s"),
    "torch_best_train_img_per_s": med(best, "train_img_per_s"),
    "train_ratio_vs_torch_fp32": ratio("train_img_per_s", fp32),
    "train_ratio_vs_torch_best": ratio("train_img_per_s", best),
    "autosampler_infer_img_per_s": med(ours, "infer_img_per_s"),
    "torch_fp32_infer_img_per_s": med(fp32, "infer_img_per_s"),
    "torch_best_infer_img_per_s": med(best, "infer_img_per_s"),
    "infer_ratio_vs_torch_fp32": ratio("infer_img_per_s", fp32),
    "infer_ratio_vs_torch_best": ratio("infer_img_per_s", best),
    "autosampler_peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
    "torch_peak_rss_mb_max_of_children": max(r["peak_rss_mb"] for r in best),
    "torch_best": "bf16 autocast + channels-last",
}
print(json.dumps(res))
