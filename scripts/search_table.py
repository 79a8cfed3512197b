#!/usr/bin/env python3
"""Prints the dataset × method table (test top-1, mean ± std over stage-1 seeds × search seeds)
of bench-search-quality's JSON lines, as Markdown.

    python3 scripts/search_table.py bench/results/search_quality.jsonl
"""
import json
import sys

ROWS = [
    ("stage1", "stage 1 (no re-training)"),
    ("crt_instance", "cRT, instance-balanced"),
    ("crt_square_root", "cRT, square-root"),
    ("crt_class_balanced", "cRT, class-balanced"),
    ("searched", "**searched (default: stage-2 proxy, held-out re-score)**"),
    ("searched_best_draw", "same search, best single draw"),
    ("random_search", "random search, same budget"),
    ("paper", "paper's Algorithm 1 (1-epoch proxy, best draw)"),
    ("tau_normalised", "τ-normalisation (comparison)"),
    ("logit_adjusted", "logit adjustment (comparison)"),
    ("lws", "LWS (comparison)"),
]


def cell(v):
    t = v.get("test_top1") or {}
    if t.get("mean") is None:
        return "–"
    n = len(v.get("runs", []))
    return f"{t['mean']:.2f} ± {t['std']:.2f} (n={n})"


def main(path):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    print("| method | " + " | ".join(l["dataset"] for l in lines) + " |")
    print("|---|" + "---|" * len(lines))
    for key, name in ROWS:
        print(f"| {name} | " + " | ".join(cell(l.get(key, {})) for l in lines) + " |")
    # from the per-run values, unrounded (the line's own flags compared means rounded to 0.01
    # before bench-search-quality was fixed: six searches that returned class-balanced's weights
    # printed 69.59 against its 69.60)
    def mean(l, key):
        v = [r["test_top1"] for r in l[key]["runs"]]
        return sum(v) / len(v)

    def best_fixed(l):
        return max(mean(l, k) for k in ("crt_instance", "crt_square_root", "crt_class_balanced"))

    print("| searched − class-balanced | " + " | ".join(f"{mean(l, 'searched') - mean(l, 'crt_class_balanced') + 0.0:+.2f}".replace("-0.00", "+0.00") for l in lines) + " |")
    print("| goal: searched ≥ best fixed | " + " | ".join(str(mean(l, "searched") >= best_fixed(l) - 1e-9).lower() for l in lines) + " |")
    print("| goal: searched ≥ class-balanced + 1 | " + " | ".join(str(mean(l, "searched") >= mean(l, "crt_class_balanced") + 1 - 1e-9).lower() for l in lines) + " |")
    for l in lines:
        chosen = [r["chosen"] for r in l["searched"]["runs"]]
        print(f"\n{l['dataset']}: chosen by the default search: {', '.join(chosen)}; mean reward of the M "
              "samples, first 10 → last 10 trajectories, per search: "
              + ", ".join(f"{x['first10_mean_reward']} → {x['last10_mean_reward']}" for x in l["learning"]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/search_quality.jsonl")
