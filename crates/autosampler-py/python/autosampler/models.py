"""The networks autosampler trains, as `torch.nn.Module`s with the same parameter names, so a
model written by `autosampler run` (model.safetensors) loads with `load_state_dict(strict=True)`.

Covered: every architecture autosampler trains:
- the CIFAR ResNets with option-A shortcuts (resnet8/20/32/56, LDAM-DRW's and torch_reference.py's
  layout);
- torchvision's ResNet-18/50/101/152 and ResNeXt-50 32x4d, with the ImageNet stem or the small one
  (3x3 conv, no max-pool) for 32-64 px images: the same names as torchvision's modules;
- BBN's bilateral body (the last block doubled into `cb_block` and `rb_block`);
- the linear, cosine (LDAM's NormedLinear), linear-on-normalised (stage 2's classifier on a cosine
  model's features) and causal (TDE, with total-direct-effect inference in eval mode) heads.
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


class CausalHead(nn.Module):
    """TDE's multi-head causal normalised classifier (`weight [C, D]`, the moving average of the
    training features `embed [D]`): `sum_h (tau/H) x_h/|x_h| . w_h/(|w_h| + gamma)`; in eval mode
    with alpha != 0, each head's normalised feature first loses alpha times its projection on the
    normalised mean feature (total direct effect)."""

    def __init__(self, d: int, c: int, heads: int = 2, tau: float = 16.0, gamma: float = 1 / 32,
                 alpha: float = 1.0, momentum: float = 0.9):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c, d))
        self.register_buffer("embed", torch.zeros(d))
        self.heads, self.tau, self.gamma, self.alpha = heads, tau, gamma, alpha

    def forward(self, x):
        h = self.heads
        nx = F.normalize(x.view(x.shape[0], h, -1), dim=2)
        w = self.weight.view(self.weight.shape[0], h, -1)
        nw = w / (w.norm(dim=2, keepdim=True) + self.gamma)
        if not self.training and self.alpha != 0:
            nc = F.normalize(self.embed.view(1, h, -1), dim=2)
            nx = nx - (nx * nc).sum(2, keepdim=True) * self.alpha * nc
        return nx.flatten(1) @ nw.flatten(1).t() * (self.tau / h)


def _head(head, d: int, c: int) -> nn.Module:
    if isinstance(head, dict) and set(head) == {"causal"}:
        return CausalHead(d, c, **head["causal"])
    if head == "linear":
        return nn.Linear(d, c)
    if head == "cosine":
        return NormedLinear(d, c)
    if head == "linear-on-normalised":
        return LinearOnNormalised(d, c)
    raise ValueError(f"head {head!r}: not one of linear, cosine, linear-on-normalised, {{causal = ...}}")


class Bilateral(nn.Module):
    """BBN's two branches over the shared body's output: both pooled, side by side."""

    def __init__(self, cb_block: nn.Module, rb_block: nn.Module):
        super().__init__()
        self.cb_block, self.rb_block = cb_block, rb_block


def _pool(x):
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


class ResNetCifar(nn.Module):
    """CIFAR ResNet-(6n+2) with option-A shortcuts; `features(x)` is the pooled 64-d feature."""

    def __init__(self, depth: int = 32, num_classes: int = 10, head="linear", bilateral: bool = False):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth {depth} is not 6n + 2")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        specs, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                specs.append((cin, cout, stride if i == 0 else 1))
                cin = cout
        layers = [BasicBlock(*s) for s in specs]
        self.bilateral = bilateral
        if bilateral:
            # the last block twice, as it is (for resnet8, the stride-2 32 -> 64 one)
            self.cb_block, self.rb_block = layers.pop(), BasicBlock(*specs[-1])
        self.layers = nn.Sequential(*layers)
        self.fc = _head(head, 128 if bilateral else 64, num_classes)

    def features(self, x):
        x = self.layers(F.relu(self.bn(self.conv(x))))
        if self.bilateral:
            return torch.cat([_pool(self.cb_block(x)), _pool(self.rb_block(x))], 1)
        return _pool(x)

    def forward(self, x):
        return self.fc(self.features(x))


class TvBasicBlock(nn.Module):
    """torchvision's BasicBlock (projection shortcut `downsample.0/1`)."""
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, groups: int = 1, width_per_group: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class TvBottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3; grouped for ResNeXt)."""
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, groups: int = 1, width_per_group: int = 64):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _downsample(cin, planes * 4, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(cin: int, cout: int, stride: int):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


# block, blocks per stage, groups, width per group (torchvision.models.resnet)
IMAGENET_ARCHS = {
    "resnet18": (TvBasicBlock, (2, 2, 2, 2), 1, 64),
    "resnet50": (TvBottleneck, (3, 4, 6, 3), 1, 64),
    "resnet101": (TvBottleneck, (3, 4, 23, 3), 1, 64),
    "resnet152": (TvBottleneck, (3, 8, 36, 3), 1, 64),
    "resnext50-32x4d": (TvBottleneck, (3, 4, 6, 3), 32, 4),
}


class ResNet(nn.Module):
    """torchvision's ResNet/ResNeXt with the same names (`conv1`, `bn1`, `layer1.0.downsample.0`,
    `fc`); `stem="small"` replaces the 7x7/2 conv and max-pool by a 3x3/1 conv (32-64 px images);
    `bilateral` doubles the last block into `cb_block`/`rb_block` (BBN)."""

    def __init__(self, arch: str = "resnet50", num_classes: int = 1000, head="linear", stem: str = "imagenet",
                 bilateral: bool = False):
        super().__init__()
        block, depths, groups, wpg = IMAGENET_ARCHS[arch]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        elif stem == "small":
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        else:
            raise ValueError(f"stem {stem!r}: not imagenet or small")
        self.max_pool = stem == "imagenet"
        self.bn1 = nn.BatchNorm2d(64)
        cin, stages = 64, []
        for planes, stride, n in zip((64, 128, 256, 512), (1, 2, 2, 2), depths):
            blocks = []
            for i in range(n):
                last = (cin, planes, stride if i == 0 else 1, groups, wpg)
                blocks.append(block(*last))
                cin = planes * block.expansion
            stages.append(blocks)
        self.bilateral = bilateral
        if bilateral:
            self.cb_block, self.rb_block = stages[-1].pop(), block(*last)
        for i, blocks in enumerate(stages):
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = _head(head, cin * (2 if bilateral else 1), num_classes)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.max_pool:
            x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.bilateral:
            return torch.cat([_pool(self.cb_block(x)), _pool(self.rb_block(x))], 1)
        return _pool(x)

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
    bilateral = bool(model.get("bilateral", False))
    if arch in ("resnet8", "resnet20", "resnet32", "resnet56"):
        return ResNetCifar(int(arch.removeprefix("resnet")), num_classes, head, bilateral)
    if arch in IMAGENET_ARCHS:
        return ResNet(arch, num_classes, head, model.get("stem", "small"), bilateral)
    raise ValueError(f"arch {arch!r}: not one of resnet8/20/32/56, {', '.join(IMAGENET_ARCHS)}")


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


def save_init(source, path) -> Path:
    """Writes `[model] init`'s file: the weights of `source` (a `torch.nn.Module`, a state dict, or
    the path of a `.pth`/`.pt` holding one, optionally under "state_dict" or "model", with
    DataParallel's "module." prefixes) as safetensors under the same names. Returns the path.

        asp.save_init(torchvision.models.resnet50(weights="IMAGENET1K_V2"), "resnet50.safetensors")
    """
    from safetensors.torch import save_file

    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, dict):
        state = source
    else:
        state = torch.load(str(source), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{source}: holds a {type(state).__name__}, not a state dict")
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    tensors = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{source}: entry {name!r} is a {type(t).__name__}, not a tensor")
        tensors[name.removeprefix("module.")] = t.detach().cpu().contiguous().clone()
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    return path
