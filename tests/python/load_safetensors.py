#!/usr/bin/env python3
"""Loads an autosampler CIFAR ResNet checkpoint into the PyTorch module it mirrors (LDAM-DRW's
resnet32 / torch_reference.py's ResNetCifar: same names) with strict=True, runs the saved input
and prints the largest absolute difference from the logits autosampler computed. A model exported
by `autosampler run` (model.safetensors) says its depth and classes in its card; a bare checkpoint
is taken as ResNet-32 with 10 classes.

  python tests/python/load_safetensors.py MODEL.safetensors IO.safetensors
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
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


class ResNetCifar(nn.Module):
    def __init__(self, depth=32, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1))


model_path, io_path = sys.argv[1:3]
with safe_open(model_path, "pt") as f:
    card = json.loads((f.metadata() or {}).get("autosampler", "null"))
depth, classes = 32, 10
if card is not None:
    assert card["model"]["head"] == "linear" and not card["model"]["bilateral"], card["model"]
    depth, classes = int(card["model"]["arch"].removeprefix("resnet")), len(card["classes"])
m = ResNetCifar(depth, classes)
m.load_state_dict(load_file(model_path), strict=True)
m.eval()
io = load_file(io_path)
with torch.no_grad():
    out = m(io["input"])
print(f"{(out - io['logits']).abs().max().item():.3e}")
