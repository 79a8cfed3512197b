"""The Python package (`import autosampler`), tested against the command line and numpy.

Run by `./x test` after `maturin develop` installs the package into the torch venv;
AUTOSAMPLER_BIN names the command-line program to compare with.
"""
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import autosampler as asp

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data"


def cli(*args, cwd=None):
    exe = os.environ.get("AUTOSAMPLER_BIN") or str(ROOT / "target" / "debug" / "autosampler")
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def ldam_draw(labels, num_classes, ir, seed, k):
    """LDAM-DRW's numpy draw with a balanced hold-out first (what the library reproduces)."""
    labels = np.asarray(labels)
    by_class = [np.where(labels == c)[0] for c in range(num_classes)]
    n_max = min(len(i) for i in by_class) - k
    counts = [int(n_max * (1 / ir) ** (c / (num_classes - 1))) for c in range(num_classes)]
    rng = np.random.RandomState(seed)
    train, val = [], []
    for c in range(num_classes):
        idx = by_class[c].copy()
        rng.shuffle(idx)
        val += idx[:k].tolist()
        train += idx[k:k + counts[c]].tolist()
    return train, val, counts


def test_longtail_split_is_ldam_drws_numpy_draw():
    labels = np.random.RandomState(7).randint(0, 10, size=3000).tolist()
    for ir, seed, k in [(100, 0, 20), (50, 3, 0), (10, 1, 5)]:
        assert asp.longtail_split(labels, 10, ir, seed=seed, val_per_class=k) == ldam_draw(labels, 10, ir, seed, k)
    with pytest.raises(ValueError, match="not below num_classes"):
        asp.longtail_split([0, 1, 12], 10, 10)


def test_sample_weights_give_each_class_its_weight():
    labels = [0] * 6 + [1] * 3 + [2]
    w = asp.class_weights([6, 3, 1], "square-root")
    roots = [6 ** 0.5, 3 ** 0.5, 1.0]
    assert w == pytest.approx([r / sum(roots) for r in roots], abs=1e-15)
    sw = asp.sample_weights(labels, w)
    for c in range(3):
        assert sw[torch.tensor(labels) == c].sum().item() == pytest.approx(w[c], abs=1e-12)
    assert asp.class_weights([6, 3, 1], "class-balanced") == [1 / 3] * 3
    with pytest.raises(ValueError, match="sampler kind"):
        asp.class_weights([1, 2], "no-such-sampler")


def fixture_run(d, name, sections):
    """`autosampler run` of a config named `name` in folder `d`: the 3-class image-folder fixture,
    one image per class held out, then `sections` (TOML). Returns (config, run folder)."""
    cfg = d / f"{name}.toml"
    cfg.write_text(
        f'name = "{name}"\n[data.source]\nformat = "image-folder"\nroot = "{FIXTURES / "folder"}"\n'
        "[data.split]\nval_per_class = 1\n" + sections
    )
    out = d / "out"
    os.environ.setdefault("AUTOSAMPLER_CACHE", str(d / "cache"))
    cli("run", "--config", cfg, "--out", out)
    return cfg, out


def predict_io(d, *source):
    """`autosampler predict` of the fixture's test images with `source` (`--run DIR` or `--model
    FILE`): the inputs it fed the model and the logits it got (`--save-io`)."""
    io = d / "io.safetensors"
    cli("predict", *source, FIXTURES / "folder/test", "--save-io", io)
    return load_file(io)


def max_diff(model, t):
    """The largest difference between `model`'s logits on predict's inputs and predict's."""
    with torch.no_grad():
        return (model(t["input"]) - t["logits"]).abs().max().item()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished CLI run on the 3-class image-folder fixture: stage 1, search, stage 2, export."""
    return fixture_run(tmp_path_factory.mktemp("run"), "tiny",
                       '[model]\narch = "resnet8"\n[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n'
                       "[search]\ntrajectories = 4\nsamples = 3\nseed = 5\n[stage2]\nepochs = 2\nbatch_size = 4\n")


def test_search_from_python_gives_the_clis_weights(tiny_run):
    cfg, out = tiny_run
    resolved = tomllib.loads((out / "config.toml").read_text())
    tr, va = load_file(out / "features/train.safetensors"), load_file(out / "features/val.safetensors")
    m = load_file(out / "stage1/model.safetensors")
    found = asp.search_weights(tr["features"], tr["labels"], va["features"], va["labels"], m["fc.weight"], m["fc.bias"],
                               config=resolved["search"], stage2=resolved["stage2"])
    best = json.loads((out / "search/best_weights.json").read_text())
    assert found.weights == best["weights"]
    assert found.source == best["source"] and len(found.log) == 4
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        asp.search_weights(tr["features"], tr["labels"], va["features"], va["labels"], m["fc.weight"], m["fc.bias"],
                           config={"sigma": -1})


def test_exported_model_loads_strict_and_predicts_as_the_cli(tiny_run, tmp_path):
    cfg, out = tiny_run
    model, card = asp.load_model(out / "model.safetensors")
    assert card.classes == ["a", "b", "c"] and card.input_size == 8 and card.classifier.startswith("stage 2")
    t = predict_io(tmp_path, "--run", out)
    diff = max_diff(model, t)
    assert diff < 1e-4, diff
    # the card's normalisation is the one predict used: raw pixels → the same input
    px = (t["input"] * torch.tensor(card.std).view(1, 3, 1, 1) + torch.tensor(card.mean).view(1, 3, 1, 1))
    assert torch.allclose(card.normalize(px), t["input"], atol=1e-5)


def test_a_cosine_models_export_loads_strict_and_predicts_as_the_cli(tmp_path):
    """LDAM-DRW's cosine head re-trained by stage 2: the export's head is a linear classifier on
    normalised features, which the package builds from the card."""
    _, out = fixture_run(tmp_path, "cos",
                         '[model]\narch = "resnet8"\nhead = "cosine"\n'
                         '[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\nloss = { kind = "ldam", s = 30.0 }\n'
                         "[stage2]\nepochs = 2\nbatch_size = 4\nsampler = { kind = \"class-balanced\" }\n")
    model, card = asp.load_model(out / "model.safetensors")
    assert card.model["head"] == "linear-on-normalised"
    diff = max_diff(model, predict_io(tmp_path, "--run", out))
    assert diff < 1e-4, diff


def _random_bn(net):
    """Batch norm with random statistics and affine terms, so that eval mode is not an identity."""
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return net.eval()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnext50-32x4d"])
def test_torchvisions_weights_give_torchvisions_logits_in_autosampler(tiny_run, tmp_path, arch):
    """A torchvision ResNet's random state dict, through save_init, under a model card: autosampler's
    network (predict --save-io) and the package's module give torchvision's logits."""
    import torchvision
    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = _random_bn(getattr(torchvision.models, arch.replace("-", "_"))(num_classes=3))
    init = asp.save_init(net, tmp_path / "init.safetensors")
    with safe_open(str(tiny_run[1] / "model.safetensors"), "pt") as f:
        card = json.loads(f.metadata()["autosampler"])
    card["model"] = {"arch": arch, "head": "linear", "stem": "imagenet", "bilateral": False}
    model = tmp_path / "model.safetensors"
    save_file(load_file(init), str(model), metadata={"autosampler": json.dumps(card)})
    t = predict_io(tmp_path, "--model", model)
    ours, _ = asp.load_model(model)
    assert max_diff(net, t) < 1e-4
    with torch.no_grad():
        assert (ours(t["input"]) - net(t["input"])).abs().max().item() < 1e-5


def test_save_init_reads_a_pth_under_state_dict_with_dataparallels_prefix(tmp_path):
    net = asp.build_model({"arch": "resnet8"}, 3)
    pth = tmp_path / "ck.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, pth)
    got = load_file(asp.save_init(pth, tmp_path / "init.safetensors"))
    assert got.keys() == net.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in net.state_dict().items())
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: holds a list, not a state dict"):
        asp.save_init(tmp_path / "list.pth", tmp_path / "x.safetensors")


def test_bbn_and_tde_models_load_strict_and_predict_as_the_cli(tmp_path):
    """TDE's network: BBN's bilateral body with the causal head (total-direct-effect inference)."""
    _, out = fixture_run(tmp_path, "tde",
                         '[model]\narch = "resnet8"\nbilateral = true\nhead = { causal = { heads = 2 } }\n'
                         "[train]\nepochs = 2\nbatch_size = 4\nthreads = 1\n")
    model, card = asp.load_model(out / "model.safetensors")
    assert card.model["bilateral"] and "causal" in card.model["head"]
    assert model.fc.embed.abs().sum() > 0, "the trained feature mean is loaded"
    diff = max_diff(model, predict_io(tmp_path, "--run", out))
    assert diff < 1e-4, diff


def test_run_returns_the_run_folders_results(tiny_run, tmp_path):
    cfg, out = tiny_run
    r = asp.run(cfg, out=out)  # every stage complete: reused
    best = json.loads((out / "search/best_weights.json").read_text())
    assert r.search.weights == best["weights"] and r.classes == ["a", "b", "c"]
    assert r.eval["last"]["test"]["n"] == 3 and r.model.is_file() and r.report.is_file()
    assert r.stage2["weights"] == best["weights"] and r.train_counts == [5, 3, 1]  # one per class held out
    with pytest.raises(ValueError, match=r"\[train\] lr must be a finite number > 0"):
        asp.run(cfg, out=tmp_path / "bad", overrides=["train.lr=-1"])


def test_agent_locates_and_guided_cutmix_pastes_at_the_far_corner(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[data.source]\nformat = "tiny-imagenet"\nroot = "{FIXTURES / "tiny"}"\n[data.split]\nval_per_class = 1\n'
        "[agent]\nepochs = [1, 1, 1]\nbatch_size = 2\nhidden = 8\nthreads = 1\n"
    )
    os.environ.setdefault("AUTOSAMPLER_CACHE", str(tmp_path / "cache"))
    agent = asp.train_agent(cfg, tmp_path / "out")
    assert agent.image_size == 64 and agent.patch_size == 32
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rects = agent.locate(x)
    assert rects.shape == (4, 4)
    assert torch.allclose(rects[:, 2] - rects[:, 0], torch.full((4,), 32.0))
    assert (rects >= 0).all() and (rects <= 64).all()
    # hand-made patches: image 0's patch top-left, so its partner's patch lands bottom-right
    rects = torch.tensor([[0, 0, 16, 16], [48, 48, 64, 64], [0, 48, 16, 64], [48, 0, 64, 16]], dtype=torch.float32)
    y = torch.arange(4)
    mixed, ya, yb, keep = asp.guided_cutmix(x, y, rects, 16, 64, prob=1.0, tau=0.5, seed=3)
    assert keep == pytest.approx(1 - (16 / 64) ** 1.0)
    j = int(yb[0])
    assert sorted(yb.tolist()) == [0, 1, 2, 3] and torch.equal(ya, y)
    r = rects[j].long()
    assert torch.equal(mixed[0, :, 48:, 48:], x[j, :, r[1]:r[3], r[0]:r[2]])
    assert torch.equal(mixed[0, :, :48, :], x[0, :, :48, :])
    again = asp.guided_cutmix(x, y, rects, 16, 64, prob=1.0, tau=0.5, seed=3)
    assert torch.equal(again[0], mixed) and torch.equal(again[2], yb)
    unmixed = asp.guided_cutmix(x, y, rects, 16, 64, prob=0.0)
    assert unmixed[0] is x and unmixed[3] == 1.0


def test_the_example_runs_on_the_embedded_data(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples/pytorch_loop.py"), "--epochs", "1", "--trajectories", "3",
                        "--out", str(tmp_path / "example")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stage 2 with the chosen weights" in r.stdout, r.stdout


def test_tensorboard_scalars_are_the_runs_logs(tiny_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, out = tiny_run
    logdir = asp.tensorboard(out, tmp_path / "tb")
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    logs = [json.loads(line) for line in (out / "stage1/metrics.jsonl").read_text().splitlines()]
    got = [(e.step, e.value) for e in acc.Scalars("stage1/val_top1")]
    assert got == [(log["epoch"], pytest.approx(log["val_top1"], rel=1e-6)) for log in logs]
    steps = [json.loads(line) for line in (out / "search/trajectories.jsonl").read_text().splitlines()]
    assert [e.step for e in acc.Scalars("search/mean_reward")] == [s["t"] for s in steps]
