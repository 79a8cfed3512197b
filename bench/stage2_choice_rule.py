#!/usr/bin/env python3
"""The classifier a run's model uses, chosen by the rule before and after it weighed the noise of
validation: for run folders rerun with the new rule (NEW_ROOT) beside their originals (OLD_ROOT),
the old and the new choice of `[stage2] classifier = "best-on-val"` and of the search's fixed
sampler, each with its test top-1, and the default's (class-balanced cRT, or the stage-1
classifier where stage 1 re-balances). Mean ± std over the runs of a group.

    python3 bench/stage2_choice_rule.py OLD_ROOT NEW_ROOT [--json OUT]

A group is the run's name without its `_s<seed>` suffix. Test numbers are only reported: every
choice is made on validation.
"""
import argparse
import json
import os
import re
import statistics

ap = argparse.ArgumentParser()
ap.add_argument("old")
ap.add_argument("new")
ap.add_argument("--json")
a = ap.parse_args()


def test_top1(r, c):
    key = {
        "retrained": "crt",
        "best-on-val": "crt",
        "crt-class-balanced": "crt_class_balanced",
        "crt-square-root": "crt_square_root",
        "lws": "lws",
        "tau-normalised": "tau_normalised",
        "logit-adjusted": "logit_adjusted",
        "stage1": "stage1",
    }[c]
    return r[key]["test"]["top1"]


rows = []
for name in sorted(os.listdir(a.new)):
    new_p = os.path.join(a.new, name, "stage2", "eval.json")
    old_p = os.path.join(a.old, name, "stage2", "eval.json")
    if not (os.path.isfile(new_p) and os.path.isfile(old_p)):
        continue
    old, new = json.load(open(old_p)), json.load(open(new_p))
    ch = new.get("choice")
    if ch is None:
        continue
    row = {
        "run": name,
        "group": re.sub(r"_s\d+$", "", name),
        "old_choice": old["classifier"],
        "old_test": test_top1(old, old["classifier"]),
        "new_choice": new["classifier"],
        "new_test": test_top1(new, new["classifier"]),
        "default": ch["default"],
        "default_test": test_top1(new, ch["default"]),
        "best_on_val": ch["best"],
        "gain": ch["gain"],
        "se": ch["se"],
        "basis": f'{ch["basis"]} ({ch["n"]} images)',
    }
    for which, root in (("old", a.old), ("new", a.new)):
        bw = os.path.join(root, name, "search", "best_weights.json")
        if os.path.isfile(bw):
            row[f"{which}_search"] = json.load(open(bw))["source"]
    rows.append(row)

print("| run | choice before (test) | choice now (test) | default (test) | best on val − default, ± paired SE | search before → now |")
print("|---|---|---|---|---|---|")
for r in rows:
    s = f'{r.get("old_search", "–")} → {r.get("new_search", "–")}' if "new_search" in r else "–"
    print(
        f'| {r["run"]} | {r["old_choice"]} ({r["old_test"]:.2f}) | {r["new_choice"]} ({r["new_test"]:.2f}) | '
        f'{r["default"]} ({r["default_test"]:.2f}) | {r["best_on_val"]}: {r["gain"]:+.2f} ± {r["se"]:.2f} on {r["basis"]} | {s} |'
    )
groups = {}
for r in rows:
    groups.setdefault(r["group"], []).append(r)
summary = []
print()
print("| runs | n | test top-1 before | test top-1 now | now − before |")
print("|---|---|---|---|---|")
for g, rs in groups.items():
    o = [r["old_test"] for r in rs]
    n = [r["new_test"] for r in rs]
    d = [y - x for x, y in zip(o, n)]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"| {g} | {len(rs)} | {statistics.mean(o):.2f} ± {sd(o):.2f} | {statistics.mean(n):.2f} ± {sd(n):.2f} | {statistics.mean(d):+.2f} ± {sd(d):.2f} |")
    summary.append({"group": g, "runs": len(rs), "before": o, "now": n})
if a.json:
    with open(a.json, "w") as f:
        json.dump({"bench": "stage2_choice_rule", "rows": rows, "groups": summary}, f, indent=1)
