"""Data-parallel stage 1 (`python -m autosampler.distributed` under torchrun, Gloo over loopback).

Two ranks must give the parameters of one process whose batches are cut into the same two shares
(`train.micro_batches = 2`), resume after a kill, and stop when a rank dies instead of hanging.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import autosampler as asp

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "autosampler.distributed"]


@pytest.fixture(autouse=True)
def _env(tmp_path_factory):
    os.environ.setdefault("AUTOSAMPLER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback, whatever the host name resolves to


def config(d: Path, root: Path, epochs: int, batch: int, val: int, ir: int = 0) -> Path:
    cfg = d / "ddp.toml"
    longtail = f'[data.split.longtail]\nkind = "exp"\nimbalance_ratio = {ir}\n' if ir else ""
    cfg.write_text(
        f'name = "ddp"\n[data.source]\nformat = "image-folder"\nroot = "{root}"\n'
        f"[data.split]\nval_per_class = {val}\n{longtail}"
        f'[model]\narch = "resnet8"\n[train]\nepochs = {epochs}\nbatch_size = {batch}\nlr = 0.05\n'
        "warmup_epochs = 1\nthreads = 1\nseed = 3\n"
    )
    return cfg


def torchrun(cfg, out, *sets, timeout=600):
    args = [*TORCHRUN, "--config", str(cfg), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def params(path: Path) -> dict:
    """The trained parameters (batch-norm running statistics are each rank's own: left out)."""
    return {k: v for k, v in load_file(path).items() if "running_" not in k and "num_batches" not in k}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_give_one_process_with_two_shares(tmp_path):
    # the 3-class fixture: 9 training images, batches of 4, 4 and 1 (a rank gets no image of the
    # last batch and still joins its all-reduce)
    cfg = config(tmp_path, FIXTURES / "folder", epochs=3, batch=4, val=1)
    r = torchrun(cfg, tmp_path / "two")
    assert r.returncode == 0, r.stdout + r.stderr
    asp.run(cfg, out=tmp_path / "shares", overrides=["train.micro_batches=2"])
    asp.run(cfg, out=tmp_path / "whole")
    two = params(tmp_path / "two/stage1/model.safetensors")
    shares = params(tmp_path / "shares/stage1/model.safetensors")
    whole = params(tmp_path / "whole/stage1/model.safetensors")
    assert max_diff(two, shares) <= 1e-6
    # batch norm over each share is not batch norm over the batch: the test can tell them apart
    assert max_diff(two, whole) > 1e-3
    lines = lambda run: [l.split(',"val_top1"')[0] for l in (run / "stage1/metrics.jsonl").read_text().splitlines()]
    assert lines(tmp_path / "two") == lines(tmp_path / "shares")  # train loss and accuracy, all ranks
    # rank 0 ran every stage after stage 1; the run records 2 shares, so one process resumes it
    assert (tmp_path / "two/eval.json").is_file() and (tmp_path / "two/report/index.html").is_file()
    res = asp.run(cfg, out=tmp_path / "two", overrides=["train.micro_batches=2"])
    assert res.eval is not None
    with pytest.raises(ValueError, match=r"started with its batches in 2 shares .* this run cuts them in 1"):
        asp.run(cfg, out=tmp_path / "two")


def test_two_ranks_shard_evaluation_and_features(tmp_path):
    cfg = config(tmp_path, ROOT / "data/cifar10-mini.tar.gz", epochs=2, batch=64, val=20, ir=50)
    cfg.write_text(cfg.read_text() + "[search]\ntrajectories = 2\nsamples = 2\n[stage2]\nepochs = 1\n")
    two = tmp_path / "two"
    r = torchrun(cfg, two)
    assert r.returncode == 0, r.stdout + r.stderr
    # the same stage-1 models evaluated and their features extracted again by one process
    one = tmp_path / "one"
    shutil.copytree(two, one)
    for p in ["eval.json", "manifests/eval.json", "features", "manifests/features.json"]:
        (shutil.rmtree if (one / p).is_dir() else os.remove)(one / p)
    asp.run(cfg, out=one, overrides=["train.micro_batches=2"])
    ev = json.loads((two / "eval.json").read_text())
    assert ev == json.loads((one / "eval.json").read_text())
    for part in ["train", "val", "test"]:
        a, b = load_file(two / f"features/{part}.safetensors"), load_file(one / f"features/{part}.safetensors")
        assert torch.equal(a["labels"], b["labels"])
        assert a["features"].shape == b["features"].shape and a["features"].abs().sum() > 0
        assert (a["features"] - b["features"]).abs().max().item() <= 1e-5
    # each epoch's validation (sharded, on rank 0's batch-norm statistics) scored the model that
    # eval.json scores again in one process
    state = json.loads((two / "stage1/state.json").read_text())
    assert state["best_val_top1"] == ev["best"]["val"]["top1"]
    assert (two / "stage2/eval.json").is_file()  # rank 0 went on with the features


def test_two_ranks_train_the_agents_encoders_as_one_process_with_two_shares(tmp_path):
    # the encoder stages (1 and 3) only: PPO (stage 2) reads the encoders' batch-norm statistics,
    # which are rank 0's (its shares) in a data-parallel run and every share's in one process
    cfg = config(tmp_path, FIXTURES / "folder", epochs=1, batch=4, val=1)
    cfg.write_text(cfg.read_text() + "[agent]\nimage_size = 16\npatch_size = 8\nepochs = [2, 0, 1]\nbatch_size = 4\nthreads = 1\nseed = 2\n")
    r = torchrun(cfg, tmp_path / "two")
    assert r.returncode == 0, r.stdout + r.stderr
    asp.run(cfg, out=tmp_path / "shares", overrides=["agent.micro_batches=2", "train.micro_batches=2"])
    asp.run(cfg, out=tmp_path / "whole")
    agent = lambda run: params(tmp_path / run / "agent/agent.safetensors")
    assert max_diff(agent("two"), agent("shares")) <= 1e-6
    assert max_diff(agent("two"), agent("whole")) > 1e-3
    loss = lambda run: [json.loads(l)["loss"] for l in (tmp_path / run / "agent/metrics.jsonl").read_text().splitlines()]
    assert loss("two") == pytest.approx(loss("shares"), abs=1e-6) and len(loss("two")) == 3
    # a resume must cut the agent's batches as the run did
    shutil.rmtree(tmp_path / "two/manifests")
    with pytest.raises(ValueError, match=r"agent was started with its batches in 2 shares .* this run cuts them in 1"):
        asp.run(cfg, out=tmp_path / "two", overrides=["train.micro_batches=2"])
    # with PPO: rank 0 trains the policy and the ranks go on from it to stage 3 and stage 1
    cfg.write_text(cfg.read_text().replace("epochs = [2, 0, 1]", "epochs = [1, 1, 1]"))
    r = torchrun(cfg, tmp_path / "ppo")
    assert r.returncode == 0, r.stdout + r.stderr
    logs = [json.loads(l) for l in (tmp_path / "ppo/agent/metrics.jsonl").read_text().splitlines()]
    assert [l["stage"] for l in logs] == [1, 2, 3] and len(logs[1]["reward"]) == 2
    assert (tmp_path / "ppo/stage1/model.safetensors").is_file()
    # the training images' patches, located by the 2 ranks (a block each), as one process locates them
    one = tmp_path / "ppo_one"
    shutil.copytree(tmp_path / "ppo", one)
    os.remove(one / "agent/locations.bin")
    os.remove(one / "manifests/locations.json")
    asp.run(cfg, out=one, overrides=["agent.micro_batches=2", "train.micro_batches=2"])
    assert (one / "agent/locations.bin").read_bytes() == (tmp_path / "ppo/agent/locations.bin").read_bytes()


def test_each_rank_takes_its_own_gpu_for_training_and_the_agent():
    from autosampler.distributed import place
    assert place("cuda", "cuda", 1) == (["train.device=cuda:1", "agent.device=cuda:1"], ["cuda:1", "cuda:1"])
    assert place("cuda:3", None, 1) == ([], ["cuda:3"])  # a device the config names is kept
    assert place("cpu", "cuda", 2) == (["agent.device=cuda:2"], ["cuda:2"])
    assert place("cpu", "cpu", 0) == ([], [])  # Gloo alone


def test_a_bad_config_stops_every_rank_before_any_work(tmp_path):
    cfg = config(tmp_path, FIXTURES / "folder", epochs=1, batch=4, val=1)
    r = torchrun(cfg, tmp_path / "bad", "train.lr=-1")
    assert r.returncode != 0
    assert "[train] lr must be a finite number > 0" in r.stderr
    assert not (tmp_path / "bad").exists()


def wait_for_epochs(out: Path, n: int, proc, limit=300):
    metrics = out / "stage1/metrics.jsonl"
    t0 = time.time()
    while time.time() - t0 < limit:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"{metrics}: fewer than {n} epochs after {limit} s")


def test_a_killed_two_rank_run_resumes_to_the_same_weights(tmp_path):
    cfg = config(tmp_path, ROOT / "data/cifar10-mini.tar.gz", epochs=3, batch=64, val=20, ir=50)
    full = torchrun(cfg, tmp_path / "full")
    assert full.returncode == 0, full.stderr
    out = tmp_path / "killed"
    p = subprocess.Popen([*TORCHRUN, "--config", str(cfg), "--out", str(out)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_epochs(out, 1, p)
    # the launcher and both ranks at once (torchrun starts its workers in their own process
    # groups, so they are found by their command line)
    for pid in procs_of(out):
        os.kill(pid, signal.SIGKILL)
    p.wait()
    wait_gone(out)
    assert not (out / "stage1/model.safetensors").exists()
    again = torchrun(cfg, out)
    assert again.returncode == 0, again.stderr
    assert "epoch   1 " not in again.stderr  # resumed, not restarted
    assert max_diff(params(out / "stage1/model.safetensors"), params(tmp_path / "full/stage1/model.safetensors")) == 0
    assert len((out / "stage1/metrics.jsonl").read_text().splitlines()) == 3


def test_a_dead_rank_stops_the_other(tmp_path):
    cfg = config(tmp_path, ROOT / "data/cifar10-mini.tar.gz", epochs=30, batch=64, val=20, ir=50)
    out = tmp_path / "dies"
    p = subprocess.Popen([*TORCHRUN, "--config", str(cfg), "--out", str(out)], start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_epochs(out, 1, p)
    rank1 = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
             if _env(pid).get("RANK") == "1" and _env(pid).get("TORCHELASTIC_RUN_ID") and str(out) in _cmdline(pid)]
    assert len(rank1) == 1, rank1
    os.kill(rank1[0], signal.SIGKILL)
    try:
        log, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        raise AssertionError("rank 0 still running 120 s after rank 1 died")
    assert p.returncode != 0
    assert "rank      : 1" in log and "SIGKILL" in log, log[-3000:]
    assert len((out / "stage1/metrics.jsonl").read_text().splitlines()) < 30


def procs_of(out: Path) -> list[int]:
    """Live processes (launcher and ranks) of the run into `out`."""
    return [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if str(out) in _cmdline(pid) and _state(pid) not in ("Z", "X", "")]


def wait_gone(out: Path, limit=60):
    t0 = time.time()
    while time.time() - t0 < limit:
        live = procs_of(out)
        if not live:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of {out} still alive {limit} s after SIGKILL: {live}")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _env(pid: int) -> dict:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""
