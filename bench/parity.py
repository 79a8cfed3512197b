#!/usr/bin/env python3
"""Issue 15's parity line: autosampler's stage-1 evaluation against the PyTorch reference's, for
one data split, seed and recipe. One JSON line on stdout.

  python bench/parity.py --ours RUN/eval.json --torch REF.json --epochs 200 [--note TEXT]

`--ours` is a run folder's eval.json (or its copy in bench/results/), `--torch` what
`torch_reference.py train --out` wrote. A missing or unreadable side is named in the line
(`autosampler_error` / `torch_error`) instead of failing, so a script that ran both reports
what it has.
"""
import argparse
import json

PROTOCOL = ("CIFAR-10-LT IR 100 (JPEG copy), val 20/class, ResNet-32, CE, LDAM-DRW recipe (warm-up 5, "
            "lr 0.1, x0.01 at 160, x0.0001 at 180, batch 128, wd 2e-4), seed 0, last epoch")


def line(ours: str, ref: str, epochs: int, note: str | None = None) -> dict:
    row = {"bench": "parity_c10lt_ir100", "epochs": epochs, "protocol": PROTOCOL}
    if note:
        row["note"] = note
    try:
        e = json.load(open(ours))["last"]
        row.update(autosampler_test_top1=round(e["test"]["top1"], 2), autosampler_test_many=round(e["test"]["many"], 2),
                   autosampler_test_medium=round(e["test"]["medium"], 2))
    except (OSError, KeyError, ValueError) as err:
        row["autosampler_error"] = f"{ours}: {err!r}"
    try:
        r = json.load(open(ref))
        if r.get("epochs") not in (None, epochs):
            raise ValueError(f"the reference ran {r['epochs']} epochs, not {epochs}")
        row.update(torch_test_top1=round(r["test"]["top1"], 2), torch_test_many=round(r["test"]["many"], 2),
                   torch_test_medium=round(r["test"]["medium"], 2), torch_train_wall_s=r["train_wall_s"])
    except (OSError, KeyError, ValueError) as err:
        row["torch_error"] = f"{ref}: {err!r}"
    if "autosampler_test_top1" in row and "torch_test_top1" in row:
        row["difference"] = round(row["autosampler_test_top1"] - row["torch_test_top1"], 2)
        row["goal_within_1_point"] = abs(row["difference"]) <= 1.0
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", required=True, help="autosampler's eval.json")
    ap.add_argument("--torch", required=True, help="torch_reference.py's result JSON")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--note", help="where each side ran, when not on one machine")
    a = ap.parse_args()
    print(json.dumps(line(a.ours, a.torch, a.epochs, a.note)))


if __name__ == "__main__":
    main()
