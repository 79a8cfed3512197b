"""autosampler from PyTorch: long-tailed splits, fixed and searched class weights, the patch
agent's guided CutMix, exported models, and whole runs of a config.

    import autosampler as asp
    train_idx, val_idx, counts = asp.longtail_split(labels, num_classes=10, imbalance_ratio=100,
                                                    val_per_class=20)
    w = asp.class_weights(counts, "class-balanced")
    sampler = torch.utils.data.WeightedRandomSampler(asp.sample_weights(train_labels, w), len(train_labels))
    best = asp.search_weights(train_feats, train_labels, val_feats, val_labels, fc.weight, fc.bias)
    model, card = asp.load_model("runs/demo/model.safetensors")
    asp.save_init(torchvision.models.resnet50(weights="IMAGENET1K_V2"), "r50.safetensors")  # [model] init

The numerical work is the Rust library (`autosampler._native`); torch tensors cross as numpy
views where torch allows (CPU, contiguous) and are copied once into libtorch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from . import _native
from . import models
from .models import ModelCard, load_model, build_model, save_init

__all__ = [
    "longtail_split",
    "class_weights",
    "sample_weights",
    "search_weights",
    "SearchResult",
    "Agent",
    "train_agent",
    "guided_cutmix",
    "run",
    "RunResult",
    "tensorboard",
    "load_model",
    "build_model",
    "save_init",
    "ModelCard",
]


def _labels(x) -> list[int]:
    if isinstance(x, torch.Tensor):
        return [int(v) for v in x.detach().cpu().tolist()]
    return [int(v) for v in x]


def longtail_split(labels, num_classes: int, imbalance_ratio: float, seed: int = 0,
                   val_per_class: int = 0) -> tuple[list[int], list[int], list[int]]:
    """The exponential long-tailed subset of a training set and its balanced hold-out, drawn as
    `autosampler data prepare` and LDAM-DRW's numpy code draw them (per class, in order, one
    `np.random.RandomState(seed)`). Returns (train indices, val indices, training count per class).
    """
    return _native.longtail_split(_labels(labels), num_classes, float(imbalance_ratio), seed, val_per_class)


def class_weights(counts: Sequence[int], kind: str = "class-balanced", epoch: int = 0, epochs: int = 1) -> list[float]:
    """A fixed sampler's class weights (sum 1): instance, square-root, class-balanced,
    progressive (at `epoch` of `epochs`), reversed."""
    return _native.class_weights([int(c) for c in counts], kind, epoch, epochs)


def sample_weights(labels, weights: Sequence[float]) -> torch.Tensor:
    """Per-sample weights w_c / n_c for `torch.utils.data.WeightedRandomSampler`: sampling with them
    draws class c with probability w_c."""
    y = torch.as_tensor(_labels(labels), dtype=torch.long)
    counts = torch.bincount(y, minlength=len(weights)).double()
    w = torch.as_tensor(list(weights), dtype=torch.double)
    return (w / counts.clamp(min=1))[y]


def _f32(t) -> np.ndarray:
    return np.ascontiguousarray(torch.as_tensor(t).detach().to("cpu", torch.float32).numpy())


def _i64(t) -> np.ndarray:
    return np.ascontiguousarray(torch.as_tensor(t).detach().to("cpu", torch.int64).numpy())


@dataclass
class SearchResult:
    """The search's answer: the class weights, where they came from (a searched sample, the
    policy mean, or a fixed sampler that no sample beat), every candidate, and the trajectory log."""

    weights: list[float]
    source: str
    reward: float
    candidates: list[dict]
    gain_over_fixed: Optional[float]
    gain_se: Optional[float]
    best: dict
    log: list[dict]


def search_weights(train_features, train_labels, val_features, val_labels, fc_weight, fc_bias,
                   config: Optional[dict] = None, stage2: Optional[dict] = None) -> SearchResult:
    """The class-weight search (the coarse auto-sampler) on features you computed: the stage-1
    classifier (`fc_weight [C, D]`, `fc_bias [C]`) re-trained with candidate class weights, scored
    on the validation features. `config` takes the fields of a config's `[search]` section and
    `stage2` those of `[stage2]` (the proxy's recipe); the same features, config and seed give the
    CLI's weights. For a cosine (LDAM-DRW) model, pass what the CLI searches with: the features
    l2-normalised (`F.normalize(x, dim=1)`), `fc_weight = s * F.normalize(W, dim=0).T` (`W` the
    cosine head's `[D, C]` weight, `s` the LDAM loss's scale) and a zero `fc_bias`."""
    best, log = _native.search_weights(
        _f32(train_features), _i64(train_labels), _f32(val_features), _i64(val_labels),
        _f32(fc_weight), _f32(fc_bias), json.dumps(config or {}), json.dumps(stage2 or {}))
    b = json.loads(best)
    return SearchResult(weights=b["weights"], source=b["source"], reward=b["reward"],
                        candidates=b["candidates"], gain_over_fixed=b.get("gain_over_fixed"),
                        gain_se=b.get("gain_se"), best=b, log=json.loads(log))


AGENT_MEAN = (0.4914, 0.4822, 0.4465)
AGENT_STD = (0.2470, 0.2435, 0.2616)


def train_agent(config, out, overrides: Sequence[str] = ()) -> "Agent":
    """Trains (or reuses, when complete) the patch agent of a config's `[agent]` into
    `<out>/agent`, as `autosampler run` does, and opens it."""
    return Agent(_native.train_agent(str(config), str(out), list(overrides)))


class Agent:
    """A trained patch agent (`<run>/agent`): `locate(images)` gives each image's salient patch as
    `[x0, y0, x1, y1]` in pixels of the images (normalised as the agent was trained: CIFAR-10's
    mean and std, `AGENT_MEAN` / `AGENT_STD`)."""

    def __init__(self, folder):
        self._a = _native.Agent(str(folder))

    @property
    def image_size(self) -> int:
        return self._a.image_size

    @property
    def patch_size(self) -> int:
        return self._a.patch_size

    @property
    def classes(self) -> list[str]:
        return self._a.classes

    def locate(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._a.locate(_f32(images)))


def guided_cutmix(images: torch.Tensor, labels: torch.Tensor, rects: torch.Tensor, patch_side: float,
                  image_side: float, prob: float = 1.0, tau: float = 0.5,
                  fixed_lambda: Optional[float] = None, seed: int = 0):
    """Agent-guided CutMix of a batch (Section 3.3.3): with probability `prob`, each image receives
    a shuffled partner's salient patch (`rects`, from `Agent.locate`) at its own corner farthest
    from its own patch; λ = (patch_side / image_side)^(2τ), or `fixed_lambda`, is the pasted
    patch's label weight. Returns (images, labels_a, labels_b, weight of labels_a); the loss is
    `w·CE(out, labels_a) + (1 − w)·CE(out, labels_b)`. Without mixing, labels_b = labels_a, w = 1."""
    out = _native.guided_cutmix(_f32(images), _f32(rects), float(patch_side), float(image_side),
                                float(prob), float(tau), fixed_lambda, int(seed))
    if out is None:
        return images, labels, labels, 1.0
    mixed, perm, keep = out
    perm = torch.as_tensor(perm, dtype=torch.long, device=labels.device)
    return torch.from_numpy(mixed).to(images.device), labels, labels[perm], keep


@dataclass
class RunResult:
    """What a run folder holds after `run`: `eval` is eval.json (last and best-on-val models, val
    and test metrics), `search` the chosen class weights (or None without `[search]`), `stage2`
    stage2/eval.json (or None), `model` the exported model.safetensors."""

    run: Path
    classes: list[str]
    train_counts: list[int]
    eval: Optional[dict]
    search: Optional[SearchResult]
    stage2: Optional[dict]
    model: Optional[Path]
    report: Optional[Path]


def run(config, out=None, overrides: Sequence[str] = ()) -> RunResult:
    """Runs every stage of a config (as `autosampler run`, reusing complete stages; `overrides`
    as `--set`) and returns the run's results."""
    r = json.loads(_native.run(str(config), None if out is None else str(out), list(overrides)))
    b = r["search"]
    search = None if b is None else SearchResult(
        weights=b["weights"], source=b["source"], reward=b["reward"], candidates=b["candidates"],
        gain_over_fixed=b.get("gain_over_fixed"), gain_se=b.get("gain_se"), best=b, log=[])
    path = lambda p: None if p is None else Path(p)  # noqa: E731
    return RunResult(run=Path(r["run"]), classes=r["classes"], train_counts=r["train_counts"], eval=r["eval"],
                     search=search, stage2=r["stage2"], model=path(r["model"]), report=path(r["report"]))


def tensorboard(run_folder, logdir=None) -> Path:
    """Writes a run folder's logs as TensorBoard scalars (with `torch.utils.tensorboard`, which
    needs the `tensorboard` package) into `logdir` (default `<run>/tensorboard`), and returns it:
    stage 1 per epoch (`stage1/*`: lr, train loss and accuracy, val top-1 and balanced accuracy,
    images/s), the agent per epoch (`agent/*`), and the search per trajectory (`search/*`).
    Rewritten whole each call; `tensorboard --logdir <it>` shows them live while a run goes on."""
    from torch.utils.tensorboard import SummaryWriter

    files = {k: Path(v) for k, v in _native.run_files(str(run_folder)).items()}
    logdir = Path(logdir) if logdir is not None else files["tensorboard"]
    if logdir.exists():
        for f in logdir.glob("events.out.tfevents.*"):
            f.unlink()

    def jsonl(path: Path):
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    w = SummaryWriter(str(logdir))
    for log in jsonl(files["stage1_metrics"]):
        for k in ("lr", "train_loss", "train_acc", "val_top1", "val_balanced", "img_per_s"):
            w.add_scalar(f"stage1/{k}", log[k], log["epoch"])
    for i, log in enumerate(jsonl(files["agent_metrics"])):
        for k in ("lr", "loss", "val_glance", "val_final", "img_per_s"):
            w.add_scalar(f"agent/{k}", log[k], i + 1)
    for step in jsonl(files["search_trajectories"]):
        w.add_scalar("search/mean_reward", step["mean_reward"], step["t"])
        w.add_scalar("search/best_reward", step["best_reward"], step["t"])
    w.close()
    return logdir
