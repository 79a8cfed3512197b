#!/usr/bin/env python3
"""bench/stage2_choice: does `[stage2] classifier = "best-on-val"` pick, on validation, the stage-2
classifier that is best on test, on other data too? For each run folder given (a finished stage 1
with cached features; the search benchmark's runs in runs/bench/search/), it runs stage 2 with
class-balanced cRT as the re-trained classifier and `classifier = "best-on-val"` in a copy under
--work, then prints one JSON line: the classifier validation chose, its test top-1, the classifier
best on test and its test top-1 (the regret is their difference), class-balanced cRT's and the
stage-1 model's test top-1.

  python bench/stage2_choice.py runs/bench/search/* [--binary target/release/autosampler] [--work /tmp/stage2_choice]
"""
import argparse
import json
import os
import shutil
import subprocess

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
p = argparse.ArgumentParser()
p.add_argument("runs", nargs="+")
p.add_argument("--binary", default=os.path.join(root, "target/release/autosampler"))
p.add_argument("--work", default="/tmp/stage2_choice")
a = p.parse_args()
keys = {"retrained": "crt", "crt-class-balanced": "crt_class_balanced", "crt-square-root": "crt_square_root",
        "lws": "lws", "tau-normalised": "tau_normalised", "logit-adjusted": "logit_adjusted"}
os.makedirs(a.work, exist_ok=True)
for src in a.runs:
    name = os.path.basename(os.path.normpath(src))
    run = os.path.join(a.work, name)
    if not os.path.isdir(run):
        shutil.copytree(src, run)
    text = open(os.path.join(src, "config.toml")).read()
    # the run's config.toml holds the data path as the run wrote it (relative to the checkout)
    text = text.replace('root = "configs/', f'root = "{root}/configs/')
    cfg = os.path.join(a.work, name + ".toml")
    open(cfg, "w").write(text)
    subprocess.run([a.binary, "stage2", "--config", cfg, "--out", run, "--set", 'stage2.sampler={kind="class-balanced"}',
                    "--set", "stage2.classifier=best-on-val"], check=True, stdout=subprocess.DEVNULL)
    s2 = json.load(open(os.path.join(run, "stage2/eval.json")))
    test = {k: s2[f]["test"]["top1"] for k, f in keys.items() if k != "retrained"}
    best_test = max(test, key=test.get)
    # the re-trained classifier is class-balanced cRT here (same weights, seed and recipe)
    chosen = "crt-class-balanced" if s2["classifier"] == "retrained" else s2["classifier"]
    chosen_test = s2[keys[chosen]]["test"]["top1"]
    print(json.dumps({
        "bench": "stage2_choice", "run": name, "epochs": json.load(open(os.path.join(src, "eval.json")))["last"]["epoch"],
        "val_per_class": s2["stage1"]["val"]["n"] // len(s2["weights"]),
        "chosen_on_val": chosen, "chosen_val_top1": s2[keys[chosen]]["val"]["top1"], "chosen_test_top1": chosen_test,
        "best_on_test": best_test, "best_test_top1": test[best_test],
        "regret": round(test[best_test] - chosen_test, 2),
        "crt_class_balanced_test_top1": test["crt-class-balanced"], "stage1_test_top1": s2["stage1"]["test"]["top1"],
    }))
