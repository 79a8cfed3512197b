#!/usr/bin/env python3
"""The PyTorch side of bench-data: torch_reference.py's own batch assembly (pad-4 crop + flip +
normalise on a uint8 batch of 128, its `augment()`), timed on the same CIFAR-10-LT training set
size with the same number of threads. Prints one JSON line.

  python3 bench/data_torch.py --threads 2 [--reference ../shared/bench/torch_reference.py]

--randaugment: the same with torchvision's RandAugment (2 ops, magnitude 9, its defaults) applied to
each uint8 image first, per image in a DataLoader with --threads workers, as a PyTorch training
script does it (bench-data's loader_randaugment_img_per_s). Needs torchvision, which the torch venv
lacks: `pip install --no-deps torchvision==0.26.0` (the release that matches torch 2.11.0).
"""
import argparse, importlib.util, json, os, time

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--randaugment", action="store_true")
p.add_argument("--reference", default=os.path.join(os.path.dirname(__file__), "../../shared/bench/torch_reference.py"))
a = p.parse_args()
spec = importlib.util.spec_from_file_location("ref", a.reference)
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
torch.set_num_threads(a.threads)
n = 12355  # CIFAR-10-LT IR 100 after the 20-per-class hold-out
x = np.random.RandomState(0).randint(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
gen = torch.Generator().manual_seed(0)
out = {"bench": "data_torch", "torch": torch.__version__, "threads": a.threads, "batch": 128}
t = time.perf_counter()
images = 0
if a.randaugment:
    import torchvision
    from torchvision.transforms import v2

    class Images(torch.utils.data.Dataset):
        ra = v2.RandAugment()

        def __len__(self):
            return n

        def __getitem__(self, i):
            return self.ra(torch.from_numpy(x[i]).permute(2, 0, 1)).permute(1, 2, 0).numpy()

    def init(_):
        torch.set_num_threads(1)

    for _ in range(a.epochs):
        loader = torch.utils.data.DataLoader(Images(), batch_size=128, shuffle=True, generator=gen,
                                             num_workers=a.threads, worker_init_fn=init,
                                             collate_fn=np.stack)
        for b in loader:
            images += ref.augment(b, gen).shape[0]
    out["torchvision"] = torchvision.__version__
    key = "loader_randaugment_img_per_s"
else:
    for _ in range(a.epochs):
        perm = torch.randperm(n, generator=gen).numpy()
        for i in range(0, n, 128):
            b = ref.augment(x[perm[i:i + 128]], gen)
            images += b.shape[0]
    key = "loader_img_per_s"
s = time.perf_counter() - t
out.update({"loader_images": images, key: round(images / s)})
print(json.dumps(out))
