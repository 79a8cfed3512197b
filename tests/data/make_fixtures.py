#!/usr/bin/env python3
"""Regenerates the small fixtures in tests/data (committed; this script documents them).

  python3 tests/data/make_fixtures.py ../shared/data/tiny-imagenet-200.tar.gz

folder/        image-folder layout: 3 classes (a: 6, b: 4, c: 2 training images; 1 test image each),
               8x8 PNGs whose pixels are a known function of (class, index, y, x, channel):
               value = (37*class + 11*index + 5*y + 3*x + 60*channel) % 256
tiny/          Tiny-ImageNet layout: 2 real classes from Tiny-ImageNet-200 (3 training images each
               with their boxes, 2 val images each with annotations), 64x64 JPEGs
lists/         split lists over folder/ (train.txt, val.txt, test.txt, names.txt)
corrupt.jpg    a JPEG cut after 200 bytes (a real 64x64 Tiny-ImageNet image)
"""
import os, sys, tarfile
import numpy as np
from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))


def pixel_image(cls, idx, size=8):
    y, x, c = np.meshgrid(np.arange(size), np.arange(size), np.arange(3), indexing="ij")
    return ((37 * cls + 11 * idx + 5 * y + 3 * x + 60 * c) % 256).astype(np.uint8)


def folder():
    counts = {"a": 6, "b": 4, "c": 2}
    for split in ("train", "test"):
        for ci, (name, n) in enumerate(counts.items()):
            d = os.path.join(here, "folder", split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(n if split == "train" else 1):
                idx = i if split == "train" else 100 + i
                Image.fromarray(pixel_image(ci, idx)).save(os.path.join(d, f"{idx:03d}.png"))
    d = os.path.join(here, "lists")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "train.txt"), "w") as f:
        for ci, (name, n) in enumerate(counts.items()):
            for i in range(n):
                f.write(f"train/{name}/{i:03d}.png {ci}\n")
    with open(os.path.join(d, "val.txt"), "w") as f:
        f.write("test/a/100.png 0\ntest/b/100.png 1\n")
    with open(os.path.join(d, "test.txt"), "w") as f:
        for ci, name in enumerate(counts):
            f.write(f"test/{name}/100.png {ci}\n")
    with open(os.path.join(d, "names.txt"), "w") as f:
        f.write("alpha\nbeta\ngamma\n")


def tiny(archive):
    wnids = ["n01443537", "n01629819"]
    out = os.path.join(here, "tiny")
    with tarfile.open(archive) as t:
        members = {m.name: m for m in t.getmembers()}
        read = lambda n: t.extractfile(members["tiny-imagenet-200/" + n]).read()
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "wnids.txt"), "w").write("\n".join(reversed(wnids)) + "\n")
        words = [l for l in read("words.txt").decode().splitlines() if l.split("\t")[0] in wnids]
        open(os.path.join(out, "words.txt"), "w").write("\n".join(words) + "\n")
        for w in wnids:
            os.makedirs(os.path.join(out, "train", w, "images"), exist_ok=True)
            lines = read(f"train/{w}/{w}_boxes.txt").decode().splitlines()[:3]
            open(os.path.join(out, "train", w, f"{w}_boxes.txt"), "w").write("\n".join(lines) + "\n")
            for l in lines:
                f = l.split("\t")[0]
                open(os.path.join(out, "train", w, "images", f), "wb").write(read(f"train/{w}/images/{f}"))
        ann = read("val/val_annotations.txt").decode().splitlines()
        keep = []
        for w in wnids:
            keep += [l for l in ann if l.split("\t")[1] == w][:2]
        os.makedirs(os.path.join(out, "val", "images"), exist_ok=True)
        open(os.path.join(out, "val", "val_annotations.txt"), "w").write("\n".join(keep) + "\n")
        for l in keep:
            f = l.split("\t")[0]
            open(os.path.join(out, "val", "images", f), "wb").write(read(f"val/images/{f}"))
        first = keep[0].split("\t")[0]
        open(os.path.join(here, "corrupt.jpg"), "wb").write(read(f"val/images/{first}")[:200])


if __name__ == "__main__":
    folder()
    tiny(sys.argv[1])
