#!/usr/bin/env python3
"""bench/accuracy_cifar10_lt: CIFAR-10-LT IR 100, ResNet-32, 30 epochs, cosine, cross-entropy,
val k = 20, seeds 0 and 1, autosampler against torch_reference.py on the same split (the split is
the same images: both draw it with numpy's RandomState(seed)). The last epoch is compared, as the
reference evaluates it. Prints one JSON line.

Runs what is missing and reuses what is finished (autosampler runs resume; reference results are
read from --ref-dir/ref_c10lt_ir100_e30_s{seed}.json, or produced with --cifar-dir).

  eval "$(./x env)"; python bench/accuracy_cifar10_lt.py --cifar-dir /tmp/cifar10 [--ref-dir DIR]

--cifar-dir is cifar10-jpeg.tar.gz unpacked (the folder holding train/ and test/), which
torch_reference.py needs; autosampler reads the archive directly.
"""
import argparse, json, os, statistics, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
p = argparse.ArgumentParser()
p.add_argument("--seeds", default="0,1")
p.add_argument("--ref-dir", default=os.path.join(root, "../shared/bench/results"))
p.add_argument("--extra-ref-dir", default=os.path.join(root, "bench/results"))
p.add_argument("--cifar-dir")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--binary", default=os.path.join(root, "target/release/autosampler"))
a = p.parse_args()

out = {"bench": "accuracy_cifar10_lt", "protocol": "CIFAR-10-LT IR 100 (JPEG copy), val 20/class, ResNet-32, "
       "30 epochs, 5 warm-up + cosine, lr 0.1, wd 2e-4, batch 128, CE, last epoch", "seeds": {}}
for seed in [int(s) for s in a.seeds.split(",")]:
    run = os.path.join(root, f"runs/bench/c10lt_ir100_e30_s{seed}")
    ev = os.path.join(run, "eval.json")
    if not os.path.exists(ev):
        subprocess.run([a.binary, "run", "--config", os.path.join(root, f"configs/bench/c10lt_ir100_e30_s{seed}.toml"),
                        "--out", run], check=True)
    ours = json.load(open(ev))
    ref = None
    for d in (a.ref_dir, a.extra_ref_dir):
        f = os.path.join(d, f"ref_c10lt_ir100_e30_s{seed}.json")
        if os.path.exists(f):
            ref = json.load(open(f))
            break
    if ref is None and a.cifar_dir:
        f = os.path.join(root, f"bench/results/ref_c10lt_ir100_e30_s{seed}.json")
        subprocess.run([sys.executable, os.path.join(root, "../shared/bench/torch_reference.py"), "train", "--data",
                        a.cifar_dir, "--ir", "100", "--epochs", "30", "--seed", str(seed), "--threads",
                        str(a.threads), "--device", "cpu", "--out", f], check=True)
        ref = json.load(open(f))
    last, best = ours["last"], ours["best"]
    row = {
        "autosampler_test_top1": round(last["test"]["top1"], 2),
        "autosampler_test_many": round(last["test"]["many"], 2),
        "autosampler_test_medium": round(last["test"]["medium"], 2),
        "autosampler_val_top1": round(last["val"]["top1"], 2),
        "autosampler_best_on_val_epoch": best["epoch"],
        "autosampler_best_on_val_test_top1": round(best["test"]["top1"], 2),
    }
    if ref:
        row.update({"torch_test_top1": round(ref["test"]["top1"], 2), "torch_test_many": round(ref["test"]["many"], 2),
                    "torch_test_medium": round(ref["test"]["medium"], 2),
                    "torch_val_top1": round(ref["val"]["top1"], 2) if ref.get("val") else None})
    out["seeds"][seed] = row
rows = out["seeds"].values()
out["autosampler_mean_test_top1"] = round(statistics.mean(r["autosampler_test_top1"] for r in rows), 2)
if all("torch_test_top1" in r for r in rows):
    out["torch_mean_test_top1"] = round(statistics.mean(r["torch_test_top1"] for r in rows), 2)
    out["difference"] = round(out["autosampler_mean_test_top1"] - out["torch_mean_test_top1"], 2)
    out["goal_within_1_point"] = abs(out["difference"]) <= 1.0
print(json.dumps(out))
