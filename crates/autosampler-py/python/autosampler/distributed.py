"""Data-parallel runs on PyTorch's process group (c10d: Gloo on CPU, NCCL on CUDA), launched like
any PyTorch job:

    torchrun --standalone --nproc-per-node 2 -m autosampler.distributed \\
        --config configs/cifar10_lt_ir100.toml --out runs/c10lt_ddp --set train.threads=1

Every rank runs the Rust pipeline (`autosampler._native.run_distributed`); stage 1 is trained by
all ranks together: each computes its shares of every batch of the same seeded epoch plan, and
the flat gradient buffer is summed over ranks with `torch.distributed.all_reduce` (the buffer is
wrapped in a `torch.Tensor` view, not copied). The patch agent's encoder stages are divided the
same way; evaluation, feature extraction and the agent's locations are sharded (each rank runs
its block of the images; the rows are gathered). Rank 0 does the data stage, the agent's PPO and
the stages that work on features, writes every file and prints progress. N ranks give the weights
of one process with `--set train.micro_batches=N` (same batch shares, batch norm per share), up to
float summation order. A killed run resumes with the same command and the same number of ranks.

The process group comes from the usual environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT: torchrun, or a scheduler, sets them); on CUDA the group is NCCL for tensors on the
GPU and Gloo for those on the CPU. AUTOSAMPLER_DIST_TIMEOUT (seconds, default 1800) bounds how
long a rank waits in a collective for a rank that died or hangs.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

from . import _native

_CTYPES = {"float32": ctypes.c_float, "float64": ctypes.c_double, "int64": ctypes.c_int64}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}
_TYPESTR = {"float32": "<f4", "float64": "<f8", "int64": "<i8"}


class _CudaMemory:
    """`__cuda_array_interface__` of device memory owned by libtorch on the Rust side."""

    def __init__(self, ptr: int, numel: int, dtype: str):
        self.__cuda_array_interface__ = {"shape": (numel,), "typestr": _TYPESTR[dtype],
                                         "data": (ptr, False), "version": 2, "strides": None}


def view(ptr: int, numel: int, dtype: str, device: str) -> torch.Tensor:
    """A `torch.Tensor` over `numel` elements at address `ptr` (no copy): the Rust tensor's
    memory, which stays alive for the duration of the call that handed it over."""
    if device == "cpu":
        buf = (_CTYPES[dtype] * numel).from_address(ptr)
        return torch.frombuffer(buf, dtype=_DTYPES[dtype], count=numel)
    return torch.as_tensor(_CudaMemory(ptr, numel, dtype), device=device)


class TorchComm:
    """The collectives the Rust training loop calls (see `autosampler::distributed::Collective`);
    without a process group (no torchrun) a group of one, where each is the identity."""

    def all_reduce(self, ptr: int, numel: int, dtype: str, device: str) -> None:
        if numel and dist.is_initialized():
            dist.all_reduce(view(ptr, numel, dtype, device), op=dist.ReduceOp.SUM)

    def broadcast(self, ptr: int, numel: int, dtype: str, device: str, root: int) -> None:
        if numel and dist.is_initialized():
            dist.broadcast(view(ptr, numel, dtype, device), src=root)

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()


def place(train_device: str | None, agent_device: str | None, local_rank: int) -> tuple[list[str], list[str]]:
    """One GPU per rank on a machine: a plain "cuda" becomes cuda:LOCAL_RANK, for stage 1 and the
    agent alike. Returns the overrides that say so and the CUDA devices the rank uses."""
    overrides, on_gpu = [], []
    for key, device in [("train", train_device), ("agent", agent_device)]:
        if device == "cuda":
            device = f"cuda:{local_rank}"
            overrides.append(f"{key}.device={device}")
        if device and device.startswith("cuda"):
            on_gpu.append(device)
    return overrides, on_gpu


def run(config: str, out: str, overrides: list[str] | None = None) -> dict | None:
    """One rank of a data-parallel run of `config` into `out` (a process group is started from the
    environment when none is; without WORLD_SIZE in the environment, e.g. not under torchrun, the
    run is one process). Returns the run's results on rank 0, None on the others."""
    overrides = list(overrides or [])
    placed, on_gpu = place(*_native.devices(config, overrides), int(os.environ.get("LOCAL_RANK", "0")))
    overrides += placed
    if not dist.is_initialized() and "WORLD_SIZE" not in os.environ:
        res = _native.run_distributed(config, out, TorchComm(), 0, 1, overrides)
        return json.loads(res)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("AUTOSAMPLER_DIST_TIMEOUT", "1800")))
        # NCCL carries CUDA tensors only: on GPUs the small CPU ones (an epoch count, a stage's
        # go-ahead, loss totals, gathered rows) go through Gloo in the same group
        backend = "cpu:gloo,cuda:nccl" if on_gpu else "gloo"
        if on_gpu:
            torch.cuda.set_device(torch.device(on_gpu[0]))
        dist.init_process_group(backend=backend, timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    res = _native.run_distributed(config, out, TorchComm(), rank, world, overrides)
    return json.loads(res) if res is not None else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autosampler.distributed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="the run folder (shared by all ranks)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, as `autosampler run --set` (repeatable)")
    a = p.parse_args(argv)
    try:
        res = run(a.config, a.out, a.set)
    except Exception as e:  # one line naming the rank; torchrun then stops the other ranks
        rank = dist.get_rank() if dist.is_initialized() else os.environ.get("RANK", "?")
        print(f"autosampler.distributed: rank {rank}: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if res is not None:
        print(json.dumps({"run": res["run"], "report": res["report"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
