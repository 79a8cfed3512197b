#!/usr/bin/env bash
# Every GPU check of the stage-1 issue in one run, for the device machine (PyTorch 2.11.0 in
# /opt/torch/.venv). Expects stripped release binaries, the CIFAR-10 archive and
# torch_reference.py in .gpu/ (see bench/README.md). Results go to $OUT.
set -u
PY=/opt/torch/.venv/bin/python
export LD_LIBRARY_PATH=$($PY -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export AUTOSAMPLER_CACHE=/tmp/ascache
OUT=${OUT:-/tmp/out}
nvidia-smi -L
# 1. throughput against torch_reference.py bench --device cuda (same network, batch, threads): the
# defaults (precision auto: bf16 on compute capability >= 8, channels-last) against PyTorch fp32
# and PyTorch bf16 autocast + channels-last, then autosampler in fp32 NCHW
$PY bench/train_throughput.py --device cuda --threads 8 --repeats 3 --binary .gpu/bench-train-throughput --reference .gpu/torch_reference.py | tee "$OUT/throughput.jsonl"
$PY bench/train_throughput.py --device cuda --threads 8 --repeats 1 --binary .gpu/bench-train-throughput --reference .gpu/torch_reference.py -- --precision fp32 --channels-last false | tee -a "$OUT/throughput.jsonl"
[ -n "${ONLY_THROUGHPUT:-}" ] && exit 0
# 2. 200 epochs, CIFAR-10-LT IR 100, cross-entropy, LDAM recipe
start=$(date +%s)
timeout "${TRAIN_LIMIT:-400}" .gpu/autosampler train --config configs/gpu/c10lt_ir100_ce_ldam_recipe.toml \
  --root .gpu/cifar10-jpeg.tar.gz --out /tmp/run 2>&1 | tail -n 25
echo "train wall: $(( $(date +%s) - start )) s"
cp /tmp/run/stage1/metrics.jsonl "$OUT/" 2>/dev/null
.gpu/autosampler eval --config configs/gpu/c10lt_ir100_ce_ldam_recipe.toml --root .gpu/cifar10-jpeg.tar.gz --out /tmp/run 2>&1 | tail -n 6
cp /tmp/run/eval.json "$OUT/" 2>/dev/null
true
# 3. data-parallel code path on NCCL: one rank (one GPU cannot host two NCCL ranks), 2 epochs,
# through torchrun and autosampler.distributed. Needs the Python package in .gpu/py/autosampler
# (crates/autosampler-py/python/autosampler with its _native*.so, built here by ./x python: the same
# torch 2.11.0, so the extension resolves libtorch from the torch that Python imported first).
if [ -d .gpu/py/autosampler ]; then
  PYTHONPATH=.gpu/py timeout "${DDP_LIMIT:-300}" $PY -m torch.distributed.run --standalone --nproc-per-node 1 \
    -m autosampler.distributed --config configs/gpu/c10lt_ir100_ce_ldam_recipe.toml --out /tmp/ddp \
    --set data.source.root="$PWD/.gpu/cifar10-jpeg.tar.gz" --set train.epochs=2 2>&1 | tail -n 12
  cp /tmp/ddp/stage1/metrics.jsonl "$OUT/ddp_nccl_metrics.jsonl" 2>/dev/null
fi
true
