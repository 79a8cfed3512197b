#!/usr/bin/env python3
"""The 224 px loader against torchvision's, on the same images, in one run. Makes an image folder of
large JPEGs from Tiny-ImageNet-200's (each 64 px image resized to a random ImageNet-like size,
300-500 px a side, quality 90; `--classes` × `--per-class`; throughput needs no real content), then
- autosampler: `bench-data --large DIR` (the folder packed once at 224 px, shorter side and centre
  crop; then random-resized-crop 224 + flip + normalisation from the cache, `--threads` workers);
- torchvision: `ImageFolder` + `RandomResizedCrop(224)`, `RandomHorizontalFlip()`, `ToTensor()`,
  `Normalize` in a `DataLoader` with `--threads` workers (JPEG decoded on every read, as a PyTorch
  script does);
both with batches of `--batch`, `--epochs` epochs. One JSON line with the ratio.

  eval "$(./x env)"; python bench/loader_224.py --threads 2 [--classes 10 --per-class 100 --epochs 5]
"""
import argparse, io, json, os, random, subprocess, tarfile, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--classes", type=int, default=10)
p.add_argument("--per-class", type=int, default=100)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--tiny", default=os.path.join(here, "../../shared/data/tiny-imagenet-200.tar.gz"))
p.add_argument("--binary", default=os.path.join(here, "../target/release/bench-data"))
a = p.parse_args()

import torch, torchvision
from PIL import Image
from torchvision import transforms

root = tempfile.mkdtemp(prefix="loader224_")
rng = random.Random(0)
counts = {}
with tarfile.open(a.tiny) as tar:
    for m in tar:
        parts = m.name.split("/")
        if len(parts) != 5 or parts[3] != "images" or parts[1] != "train" or not m.name.endswith(".JPEG"):
            continue
        wnid = parts[2]
        if wnid not in counts and len(counts) == a.classes:
            continue
        if counts.get(wnid, 0) >= a.per_class:
            continue
        img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
        img = img.resize((rng.randint(300, 500), rng.randint(300, 500)), Image.BILINEAR)
        for part in ("train", "test"):  # the image-folder layout wants a test part: one image each
            if part == "test" and counts.get(wnid, 0) > 0:
                continue
            d = os.path.join(root, part, wnid)
            os.makedirs(d, exist_ok=True)
            img.save(os.path.join(d, f"{counts.get(wnid, 0)}.JPEG"), quality=90)
        counts[wnid] = counts.get(wnid, 0) + 1
        if len(counts) == a.classes and all(v >= a.per_class for v in counts.values()):
            break
n = sum(counts.values())

env = dict(os.environ, AUTOSAMPLER_CACHE=os.path.join(root, "cache"))
ours = json.loads(subprocess.run([a.binary, "--large", root, "--threads", str(a.threads), "--epochs", str(a.epochs),
                                  "--batch", str(a.batch)], check=True, capture_output=True, text=True, env=env)
                  .stdout.strip().splitlines()[-1])

torch.set_num_threads(1)
tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ds = torchvision.datasets.ImageFolder(os.path.join(root, "train"), transform=tf)
dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.threads,
                                 persistent_workers=True)
for _ in dl:  # the workers started, the page cache warm: the steady state both sides are timed in
    break
t, images = time.perf_counter(), 0
for _ in range(a.epochs):
    for x, _ in dl:
        images += len(x)
theirs = images / (time.perf_counter() - t)
print(json.dumps({"bench": "loader_224", "images": n, "image_sizes": "300-500 px JPEG, quality 90, from Tiny-ImageNet",
                  "threads": a.threads, "batch": a.batch, "epochs": a.epochs,
                  "autosampler_img_per_s": ours["loader_img_per_s"], "torchvision_img_per_s": round(theirs, 1),
                  "ratio": round(ours["loader_img_per_s"] / theirs, 2),
                  "autosampler_cache_build_s": ours["cache_build_s"], "torchvision": torchvision.__version__}))
