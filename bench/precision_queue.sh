#!/usr/bin/env bash
# The runs behind bench/precision_accuracy.py, one at a time (two libtorch processes on 2 cores
# slow each other several-fold), each skipped by `sweep` once finished, resumed after a kill:
#   nohup nice -n 19 bash bench/precision_queue.sh BINARY >> runs/logs/precision.log 2>&1 &
# Pause it while timing anything else: kill -STOP / -CONT on the running job's pid.
# Interleaved so that a queue cut short still compares the precisions on the seeds it finished:
#   1. the 30-epoch CPU recipe on CIFAR-10-LT IR 100 with stage 2, seeds 0 and 1, bf16 and fp32
#   2. the demo's recipe on a Tiny-ImageNet long tail, bf16 and fp32
#   3. seed 2 of 1
#   4. the shipped best recipe (configs/best/) at 200 epochs in bf16, seed 0
set -eu
bin=${1:?usage: precision_queue.sh AUTOSAMPLER_BINARY}
mkdir -p runs/logs
echo "== $(date -u +%FT%TZ) precision queue with $bin"
e30() { "$bin" sweep "configs/bench/precision/c10lt_ir100_e30_$1.toml" --seeds "$2" --root runs/precision; }
for s in 0 1; do e30 bf16 $s; e30 fp32 $s; done
for p in bf16 fp32; do
  "$bin" sweep "configs/bench/precision/tiny_demo_$p.toml" --seeds 0 --root runs/precision
done
e30 bf16 2; e30 fp32 2
"$bin" sweep configs/best/cifar10_lt_ir100.toml --seeds 0 --root runs/precision_best \
  --set train.device=cpu --set train.threads=2 --set train.precision=bf16
echo "== $(date -u +%FT%TZ) precision queue done"
