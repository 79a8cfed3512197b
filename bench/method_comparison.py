#!/usr/bin/env python3
"""bench/method_comparison: cross-entropy, LDAM-DRW, BBN and TDE on the CPU-sized CIFAR-10-LT IR 100
protocol of bench/accuracy_cifar10_lt (JPEG copy, 20 per class held out for validation, ResNet-32
-- BBN's two-branch ResNet-32 for BBN and TDE --, 30 epochs, batch 128, SGD 0.9, lr 0.1 with 5
warm-up epochs then cosine, wd 2e-4, pad-4 crop + flip, 1 thread, channels-last, seed 0). Runs what
is missing (runs resume), then prints one JSON line per method from eval.json (last epoch; and the
best-on-val epoch's test top-1). Configs: configs/bench/c10lt_ir100_e30{,_ldam_drw,_bbn,_tde}_s0.toml.

  python bench/method_comparison.py [--binary target/release/autosampler] [--no-run]
"""
import argparse
import json
import os
import subprocess

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
p = argparse.ArgumentParser()
p.add_argument("--binary", default=os.path.join(root, "target/release/autosampler"))
p.add_argument("--no-run", action="store_true", help="only read finished runs")
a = p.parse_args()
for method, suffix in [("cross-entropy", ""), ("LDAM-DRW", "_ldam_drw"), ("BBN", "_bbn"), ("TDE", "_tde")]:
    name = f"c10lt_ir100_e30{suffix}_s0"
    run = os.path.join(root, "runs/bench", name)
    if not a.no_run:
        subprocess.run([a.binary, "run", "--config", os.path.join(root, "configs/bench", name + ".toml"),
                        "--out", run], check=True)
    try:
        e = json.load(open(os.path.join(run, "eval.json")))
    except FileNotFoundError:
        print(json.dumps({"bench": "method_comparison", "method": method, "missing": True}))
        continue
    t = e["last"]["test"]
    r = lambda x: None if x is None else round(x, 2)
    print(json.dumps({"bench": "method_comparison", "method": method, "test_top1": r(t["top1"]),
                      "many": r(t["many"]), "medium": r(t["medium"]), "few": r(t["few"]),
                      "val_top1": r(e["last"]["val"]["top1"]), "best_on_val_epoch": e["best"]["epoch"],
                      "best_on_val_test_top1": r(e["best"]["test"]["top1"])}))
