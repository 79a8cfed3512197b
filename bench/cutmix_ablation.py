#!/usr/bin/env python3
"""bench/cutmix_ablation: the paper's Table 2 on a CPU-sized protocol, one JSON line per row.

Protocol (configs/table2/*_cpu.toml): Tiny-ImageNet-200 long-tailed stand-in for ImageNet-LLT --
100 classes drawn at random (seed 0), 400 down to 50 training images per class (exponential),
20 per class held out for validation, the labelled val images (50 per class) as the test set;
images stretched from 64 to 32 px (the agent sees them resized to its 64 px); ResNet-8 (small stem); 20 epochs, batch 128, SGD 0.9, lr 0.1 cosine after 1 warm-up epoch,
wd 5e-4, pad-4 crop + flip; CE. Rows: baseline; random-box CutMix (alpha 1, lambda = kept area)
at p_c in {0.1, 0.3, 0.5, 0.7}; agent-guided CutMix at the same p_c with lambda = (1/4)^0.5 = 0.5;
and at p_c = 0.5 with a fixed lambda in {0.1, 0.3, 0.7}. The agent is runs/bench/agent_tiny's
(configs/bench/agent_tiny.toml), borrowed through agent.from.

Runs what is missing (autosampler sweep skips finished runs), then prints the lines:

  python bench/cutmix_ablation.py [--binary target/release/autosampler] [--root runs/table2]
"""
import argparse
import glob
import json
import os
import subprocess

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
p = argparse.ArgumentParser()
p.add_argument("--binary", default=os.path.join(root, "target/release/autosampler"))
p.add_argument("--root", default=os.path.join(root, "runs/table2"))
p.add_argument("--no-run", action="store_true", help="only read finished runs")
a = p.parse_args()
configs = sorted(glob.glob(os.path.join(root, "configs/table2/*_cpu.toml")))
if not a.no_run:
    subprocess.run([a.binary, "sweep", *configs, "--seeds", "0", "--root", a.root], check=True)
for c in configs:
    name = os.path.basename(c)[: -len(".toml")]
    run = os.path.join(a.root, name + "_s0")
    try:
        e = json.load(open(os.path.join(run, "eval.json")))
    except FileNotFoundError:
        print(json.dumps({"bench": "cutmix_ablation", "row": name, "missing": True}))
        continue
    last, best = e["last"], e["best"]
    r = lambda x: None if x is None else round(x, 2)
    print(json.dumps({
        "bench": "cutmix_ablation", "row": name.replace("tiny_llt_", "").replace("_cpu", ""),
        "test_top1": r(last["test"]["top1"]), "test_top5": r(last["test"]["top5"]),
        "many": r(last["test"]["many"]), "medium": r(last["test"]["medium"]), "few": r(last["test"]["few"]),
        "val_top1": r(last["val"]["top1"]), "best_on_val_epoch": best["epoch"],
        "best_on_val_test_top1": r(best["test"]["top1"]),
    }))
