#!/usr/bin/env python3
"""Prints the locator table of bench-agent-localization's JSON lines as Markdown: per agent
variant (the run folder's name without its `_a<seed>` suffix), the patch-centre-in-box share and
the mean IoU as mean ± std over the agent seeds found, the agent's top-1 after the glance and
after all steps, its training time and the spread of its patch centres; then the fixed locators
(centre, random, and the scans and CAM when present), which do not depend on the agent's seed.

    python3 scripts/agent_table.py bench/results/agent_localization_tiny32_*.json*
"""
import json
import re
import statistics
import sys


def lines(paths):
    for p in paths:
        with open(p) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def ms(xs, digits):
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def main(paths):
    # lines of one run (e.g. a scan and a later placements-only line) are merged, not counted twice
    runs, fixed = {}, {}
    for d in lines(paths):
        for k, v in d["centre_in_box_pct"].items():
            if k != "agent":
                fixed.setdefault(k, set()).add((v, d["mean_iou"][k]))
        if "agent" in d["centre_in_box_pct"]:
            runs.setdefault(d["run"].rstrip("/"), {}).update(d)
    agents = {}
    for run, d in runs.items():
        agents.setdefault(re.sub(r"_a\d+$", "", run.split("/")[-1]), []).append(d)
    print("| agent variant | seeds | centre in box % | mean IoU | top-1 glance / all steps | train s | centre spread px (row, col) |")
    print("|---|---|---|---|---|---|---|")
    for name, ds in sorted(agents.items(), key=lambda kv: -statistics.mean(
            d["centre_in_box_pct"]["agent"] for d in kv[1])):
        hit = [d["centre_in_box_pct"]["agent"] for d in ds]
        iou = [d["mean_iou"]["agent"] for d in ds]
        g = [d["top1_glance"] for d in ds]
        a = [d["top1_all_steps"] for d in ds]
        t = [d["agent_train_s"] for d in ds]
        sp = [d["agent_patch_centres_px"]["std_row_col"] for d in ds if "agent_patch_centres_px" in d]
        spread = (f"{statistics.mean(s[0] for s in sp):.1f}, {statistics.mean(s[1] for s in sp):.1f}"
                  if sp else "–")
        print(f"| {name} | {len(ds)} | {ms(hit, 1)} | {ms(iou, 3)} | {ms(g, 1)} / {ms(a, 1)} "
              f"| {statistics.mean(t):.0f} | {spread} |")
    print()
    print("| fixed locator | centre in box % | mean IoU |")
    print("|---|---|---|")
    for k, vs in sorted(fixed.items(), key=lambda kv: -max(v[0] for v in kv[1])):
        if len(vs) > 1:
            # the scans read each agent's own classifier: one value per agent, so a range
            h = sorted(v[0] for v in vs)
            u = sorted(v[1] for v in vs)
            print(f"| {k} (per agent) | {h[0]:.1f}–{h[-1]:.1f} | {u[0]:.3f}–{u[-1]:.3f} |")
        else:
            (h, u), = vs
            print(f"| {k} | {h:.1f} | {u:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
