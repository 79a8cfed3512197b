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
    print("| searched − class-balanced | " + " | ".join(f"{l['searched_minus_class_balanced']:+.2f}" for l in lines) + " |")
    print("| goal: searched ≥ best fixed | " + " | ".join(str(l["goal_searched_ge_best_fixed"]).lower() for l in lines) + " |")
    for l in lines:
        chosen = [r["chosen"] for r in l["searched"]["runs"]]
        print(f"\n{l['dataset']}: chosen by the default search: {', '.join(chosen)}; "
              + "; ".join(f"mean reward first 10 → last 10 trajectories {x['first10_mean_reward']} → {x['last10_mean_reward']}" for x in l["learning"][:1]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/search_quality.jsonl")
