#!/usr/bin/env python3
"""Runs bench-train-throughput and `torch_reference.py bench` alternately, N times each, with the
same network (ResNet-32), batch and threads, and prints one JSON line with both medians and the
ratio autosampler / PyTorch. Extra arguments go to the autosampler side (e.g. --channels-last).

  eval "$(./x env)"; python bench/train_throughput.py --threads 2 --repeats 3 [--device cuda] [-- --channels-last]
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
ours, ref = [], []
for _ in range(a.repeats):
    out = subprocess.run([a.binary, *common, *extra], check=True, capture_output=True, text=True).stdout
    ours.append(json.loads(out.strip().splitlines()[-1]))
    out = subprocess.run([sys.executable, a.reference, "bench", *common], check=True, capture_output=True, text=True).stdout
    ref.append(json.loads(out.strip().splitlines()[-1]))
    ref[-1]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
med = lambda rs, k: statistics.median(r[k] for r in rs)
res = {
    "bench": "train_throughput", "network": "resnet32", "batch": 128, "threads": a.threads,
    "device": a.device, "repeats": a.repeats, "autosampler_flags": " ".join(extra),
    "autosampler_train_img_per_s": med(ours, "train_img_per_s"),
    "torch_train_img_per_s": med(ref, "train_img_per_s"),
    "train_ratio": round(med(ours, "train_img_per_s") / med(ref, "train_img_per_s"), 3),
    "autosampler_infer_img_per_s": med(ours, "infer_img_per_s"),
    "torch_infer_img_per_s": med(ref, "infer_img_per_s"),
    "infer_ratio": round(med(ours, "infer_img_per_s") / med(ref, "infer_img_per_s"), 3),
    "autosampler_peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
    "torch_peak_rss_mb_max_of_children": max(r["peak_rss_mb"] for r in ref),
}
print(json.dumps(res))
