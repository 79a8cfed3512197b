#!/usr/bin/env python3
"""The PyTorch side of bench-data: torch_reference.py's own batch assembly (pad-4 crop + flip +
normalise on a uint8 batch of 128, its `augment()`), timed on the same CIFAR-10-LT training set
size with the same number of threads. Prints one JSON line.

  python3 bench/data_torch.py --threads 2 [--reference ../shared/bench/torch_reference.py]
"""
import argparse, importlib.util, json, os, time

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "../../shared/bench/torch_reference.py"))
a = p.parse_args()
spec = importlib.util.spec_from_file_location("ref", a.reference)
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
torch.set_num_threads(a.threads)
n = 12355  # CIFAR-10-LT IR 100 after the 20-per-class hold-out
x = np.random.RandomState(0).randint(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
gen = torch.Generator().manual_seed(0)
t = time.perf_counter()
images = 0
for _ in range(a.epochs):
    perm = torch.randperm(n, generator=gen).numpy()
    for i in range(0, n, 128):
        b = ref.augment(x[perm[i:i + 128]], gen)
        images += b.shape[0]
s = time.perf_counter() - t
print(json.dumps({"bench": "data_torch", "torch": torch.__version__, "threads": a.threads, "batch": 128,
                  "loader_images": images, "loader_img_per_s": round(images / s)}))
