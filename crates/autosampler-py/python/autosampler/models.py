"""The networks autosampler trains, as `torch.nn.Module`s with the same parameter names, so a
model written by `autosampler run` (model.safetensors) loads with `load_state_dict(strict=True)`.

Covered: the CIFAR ResNets with option-A shortcuts (resnet8/20/32/56, LDAM-DRW's and
torch_reference.py's layout) with a linear, cosine (LDAM's NormedLinear) or linear-on-normalised
(stage 2's classifier on a cosine model's features) head. Other
architectures (ResNet-18/50, BBN's bilateral body, TDE's causal head) raise NotImplementedError
naming what is missing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class NormedLinear(nn.Module):
    """LDAM-DRW's cosine classifier: normalised features times normalised columns of `weight`
    (`[D, C]`)."""

    def __init__(self, d: int, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d, c))

    def forward(self, x):
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


class LinearOnNormalised(nn.Linear):
    """A linear classifier on l2-normalised features (`weight [C, D]`, `bias [C]`): what stage 2
    re-trains on the features of a cosine (LDAM-DRW) model."""

    def forward(self, x):
        return super().forward(F.normalize(x, dim=1))


class ResNetCifar(nn.Module):
    """CIFAR ResNet-(6n+2) with option-A shortcuts; `features(x)` is the pooled 64-d feature."""

    def __init__(self, depth: int = 32, num_classes: int = 10, head: str = "linear"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth {depth} is not 6n + 2")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        if head == "linear":
            self.fc = nn.Linear(64, num_classes)
        elif head == "cosine":
            self.fc = NormedLinear(64, num_classes)
        elif head == "linear-on-normalised":
            self.fc = LinearOnNormalised(64, num_classes)
        else:
            raise NotImplementedError(
                f"head {head!r}: the Python module has the linear, cosine and linear-on-normalised heads")

    def features(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


@dataclass
class ModelCard:
    """What model.safetensors says of itself."""

    model: dict
    classes: list[str]
    input_size: int
    resize: str
    mean: list[float]
    std: list[float]
    classifier: str
    run: str

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (`[B, 3, S, S]`) normalised as the model was trained."""
        m = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        s = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - m) / s


def build_model(model: dict, num_classes: int) -> nn.Module:
    """The module for a config's `[model]` section (as a dict)."""
    arch, head = model["arch"], model.get("head", "linear")
    if model.get("bilateral"):
        raise NotImplementedError("BBN's bilateral body is not in the Python module yet")
    if not isinstance(head, str):
        raise NotImplementedError(f"head {head!r} (TDE's causal head) is not in the Python module yet")
    if arch in ("resnet8", "resnet20", "resnet32", "resnet56"):
        return ResNetCifar(int(arch.removeprefix("resnet")), num_classes, head)
    raise NotImplementedError(f"arch {arch!r}: the Python module has the CIFAR ResNets (resnet8/20/32/56)")


def load_model(path, device: str = "cpu") -> tuple[nn.Module, ModelCard]:
    """A model written by `autosampler run` as (module in eval mode, its card); loaded with
    strict=True."""
    path = Path(path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "autosampler" not in meta:
        raise ValueError(f"{path}: no model card in the header (write it with `autosampler run`)")
    c = json.loads(meta["autosampler"])
    card = ModelCard(model=c["model"], classes=c["classes"], input_size=c["input_size"], resize=c["resize"],
                     mean=c["normalize"]["mean"], std=c["normalize"]["std"], classifier=c["classifier"], run=c["run"])
    m = build_model(card.model, len(card.classes))
    m.load_state_dict(load_file(str(path)), strict=True)
    return m.to(device).eval(), card
