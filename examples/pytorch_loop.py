#!/usr/bin/env python3
"""A plain PyTorch training loop with autosampler's two samplers, on the embedded long-tailed
CIFAR-10 subset (data/cifar10-mini.tar.gz):

1. the long-tailed split and its balanced validation hold-out (`longtail_split`);
2. stage 1: a CIFAR ResNet trained in PyTorch with agent-guided CutMix (the patch agent locates each
   image's salient patch; `guided_cutmix` pastes a partner's patch at the least important corner);
3. the class-weight search on the stage-1 features (`search_weights`), then stage 2: the classifier
   re-trained with `WeightedRandomSampler` on the searched weights, beside class-balanced weights.

    python examples/pytorch_loop.py [--epochs 4] [--out runs/example]

Runs in about a minute on 2 CPU cores (the agent is trained once and reused).
"""
import argparse
import io
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

import autosampler as asp

ROOT = Path(__file__).resolve().parent.parent


def load_mini(path: Path):
    """The archive's train and test images as uint8 tensors [N, 3, 32, 32] with labels."""
    parts = {"train": ([], []), "test": ([], [])}
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith(".jpg")), key=lambda m: m.name)
        classes = sorted({m.name.split("/")[2] for m in members})
        for m in members:
            _, part, cls, _ = m.name.split("/")
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            parts[part][0].append(torch.from_numpy(np.array(img)).permute(2, 0, 1))
            parts[part][1].append(classes.index(cls))
    out = {k: (torch.stack(x), torch.tensor(y)) for k, (x, y) in parts.items()}
    return classes, out


def normalise(x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(asp.AGENT_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(asp.AGENT_STD).view(1, 3, 1, 1)
    return (x.float() / 255 - m) / s


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--trajectories", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "runs" / "example"))
    a = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    classes, data = load_mini(ROOT / "data" / "cifar10-mini.tar.gz")
    x_all, y_all = data["train"]
    train_idx, val_idx, counts = asp.longtail_split(y_all, num_classes=len(classes), imbalance_ratio=50,
                                                    seed=0, val_per_class=20)
    xtr, ytr = normalise(x_all[train_idx]), y_all[train_idx]
    xva, yva = normalise(x_all[val_idx]), y_all[val_idx]
    xte, yte = normalise(data["test"][0]), data["test"][1]
    print(f"long-tailed train {len(train_idx)} images, counts {counts}; val {len(val_idx)}; test {len(yte)}")

    # the patch agent of the demo config, trained once into <out>/agent and reused
    agent = asp.train_agent(ROOT / "configs" / "demo.toml", a.out)
    side = xtr.shape[-1]
    patch = agent.patch_size * side / agent.image_size

    # stage 1 in PyTorch, with agent-guided CutMix on half the batches
    model = asp.models.ResNetCifar(8, len(classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-4)
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    step = 0
    for epoch in range(a.epochs):
        model.train()
        for x, y in loader:
            rects = agent.locate(x)
            x, ya, yb, keep = asp.guided_cutmix(x, y, rects, patch, side, prob=0.5, tau=0.5, seed=step)
            out = model(x)
            loss = keep * F.cross_entropy(out, ya) + (1 - keep) * F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            print(f"stage 1 epoch {epoch + 1}: loss {loss.item():.3f}, val top-1 {accuracy(model(xva), yva):.1f}")

    # features of the frozen backbone, and the class-weight search on them
    with torch.no_grad():
        ftr, fva, fte = model.features(xtr), model.features(xva), model.features(xte)
    stage2 = {"epochs": 10, "batch_size": 128, "lr": 0.01}
    found = asp.search_weights(ftr, ytr, fva, yva, model.fc.weight, model.fc.bias,
                               config={"trajectories": a.trajectories, "samples": 8, "seed": 0}, stage2=stage2)
    print(f"search: {found.source}; weights {[round(w, 3) for w in found.weights]}")

    # stage 2: the classifier re-trained with WeightedRandomSampler on the chosen weights
    def retrain(weights) -> float:
        fc = torch.nn.Linear(ftr.shape[1], len(classes))
        fc.load_state_dict(model.fc.state_dict())
        sampler = WeightedRandomSampler(asp.sample_weights(ytr, weights), num_samples=len(ytr),
                                        generator=torch.Generator().manual_seed(0))
        o = torch.optim.SGD(fc.parameters(), lr=stage2["lr"], momentum=0.9)
        for _ in range(stage2["epochs"]):
            for f, y in DataLoader(TensorDataset(ftr, ytr), batch_size=stage2["batch_size"], sampler=sampler):
                loss = F.cross_entropy(fc(f), y)
                o.zero_grad()
                loss.backward()
                o.step()
        with torch.no_grad():
            return accuracy(fc(fte), yte)

    with torch.no_grad():
        s1 = accuracy(model.fc(fte), yte)
    searched = retrain(found.weights)
    balanced = retrain(asp.class_weights(counts, "class-balanced"))
    print(f"test top-1: stage 1 {s1:.2f}; stage 2 with the chosen weights {searched:.2f}; "
          f"with class-balanced weights {balanced:.2f}  ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
