#!/usr/bin/env python3
"""What CPU bf16 autocast would buy: `torch_reference.py`'s ResNet-32 training steps (SGD, batch
128, random inputs) in PyTorch alone, fp32 against `torch.autocast("cpu", bfloat16)`, each with and
without channels-last; one JSON line with the images/s of each (median of `--repeats`) and the
bf16/fp32 ratios. autosampler cannot switch CPU autocast on through tch 0.24 (its autocast is
CUDA only): this measures the opportunity, not autosampler. Matters on CPUs with AMX-BF16 or
AVX512-BF16 (`flags` in the line).

  eval "$(./x env)"; python bench/torch_cpu_autocast.py --threads 2
"""
import argparse, json, os, statistics, sys, time
import torch

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "shared", "bench"))
from torch_reference import ResNetCifar  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=15)
p.add_argument("--repeats", type=int, default=3)
a = p.parse_args()
torch.set_num_threads(a.threads)


def throughput(bf16, channels_last):
    torch.manual_seed(0)
    m = ResNetCifar(32, 10)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    if channels_last:
        m, x = m.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    return a.steps * 128 / (time.perf_counter() - t)


r = {}
for bf16 in (False, True):
    for cl in (False, True):
        key = f"{'bf16' if bf16 else 'fp32'}{'_channels_last' if cl else ''}"
        r[key] = round(statistics.median(throughput(bf16, cl) for _ in range(a.repeats)), 1)
cpu = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
flags = sorted({f for f in cpu.split() if f in ("amx_bf16", "avx512_bf16", "avx512f")})
print(json.dumps({
    "bench": "torch_cpu_autocast", "network": "resnet32", "batch": 128, "threads": a.threads,
    "torch": torch.__version__, "flags": flags, "img_per_s": r,
    "ratio_bf16_over_fp32": round(r["bf16"] / r["fp32"], 3),
    "ratio_bf16_over_fp32_channels_last": round(r["bf16_channels_last"] / r["fp32_channels_last"], 3),
}))
