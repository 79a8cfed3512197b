#!/usr/bin/env python3
"""bench/distributed: data-parallel stage 1 against one process, on CPU (Gloo over loopback).

CIFAR-10-LT IR 100 (the JPEG copy, val 20/class), ResNet-32, a short cosine run (--epochs, one
warm-up epoch), seed 0, three ways:
  one_process      1 process × 2 threads (the usual run)
  two_ranks        torchrun 2 ranks × 1 thread (python -m autosampler.distributed)
  one_process_two_shares  1 process × 1 thread with train.micro_batches = 2 (what 2 ranks compute)
Prints one JSON line: test/val top-1 and training throughput of each, the throughput ratio
two_ranks / one_process, and the largest parameter difference between two_ranks and
one_process_two_shares. On a 2-core machine the ratio is near 1: the point is correctness.

  eval "$(./x env)"; ./x python; python bench/distributed.py --epochs 3 [--out runs/bench/ddp]
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

from safetensors.torch import load_file

root = Path(__file__).resolve().parents[1]
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--out", default=str(root / "runs/bench/ddp"))
a = p.parse_args()
cfg = root / "configs/bench/c10lt_ir100_e30_s0.toml"
common = [f"train.epochs={a.epochs}", "train.warmup_epochs=1", "train.channels_last=false"]


def launch(name, args, sets):
    out = Path(a.out) / f"e{a.epochs}_{name}"
    cmd = [*args, "--config", str(cfg), "--out", str(out)]
    for s in common + sets:
        cmd += ["--set", s]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    wall = time.time() - t0
    ev = json.loads((out / "eval.json").read_text())["last"]
    logs = [json.loads(l) for l in (out / "stage1/metrics.jsonl").read_text().splitlines()]
    return out, {
        "test_top1": round(ev["test"]["top1"], 2),
        "test_many": round(ev["test"]["many"], 2),
        "test_medium": round(ev["test"]["medium"], 2),
        "val_top1": round(ev["val"]["top1"], 2),
        "train_img_per_s": round(sum(l["img_per_s"] for l in logs) / len(logs), 1),
        "wall_s": round(wall, 1),
    }


py = sys.executable
one = [py, "-m", "autosampler.distributed"]
runs = {}
# one process: the same entry point without torchrun (no WORLD_SIZE) is a group of one
o1, runs["one_process"] = launch("one_process", one, ["train.threads=2"])
o2, runs["two_ranks"] = launch("two_ranks", [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                             "-m", "autosampler.distributed"], ["train.threads=1"])
# what the 2 ranks compute, in one process on one thread (the ranks' kernels: with 2 intra-op threads
# libtorch sums in another order, and 300 steps of SGD turn that rounding into visible differences)
o3, runs["one_process_two_shares"] = launch("one_process_two_shares_1thread", one, ["train.threads=1", "train.micro_batches=2"])


def params(path):
    return {k: v for k, v in load_file(path).items() if "running_" not in k and "num_batches" not in k}


p2, p3 = params(o2 / "stage1/model.safetensors"), params(o3 / "stage1/model.safetensors")
diff = max((p2[k].double() - p3[k].double()).abs().max().item() for k in p2)
print(json.dumps({
    "bench": "distributed",
    "protocol": f"CIFAR-10-LT IR 100 (JPEG copy), val 20/class, ResNet-32, {a.epochs} epochs (1 warm-up, cosine), "
                "lr 0.1, batch 128, CE, seed 0, CPU, Gloo over loopback",
    "epochs": a.epochs,
    **runs,
    "throughput_ratio_two_ranks_over_one_process": round(runs["two_ranks"]["train_img_per_s"] / runs["one_process"]["train_img_per_s"], 3),
    "test_top1_two_ranks_minus_one_process": round(runs["two_ranks"]["test_top1"] - runs["one_process"]["test_top1"], 2),
    "params_max_abs_diff_two_ranks_vs_two_shares": diff,
}))
