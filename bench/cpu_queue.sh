#!/usr/bin/env bash
# The long CPU jobs of issues 15 and 12, one at a time (two libtorch processes on 2 cores slow each
# other several-fold), in order, each resumed or skipped when it is already done. A session
# restarts the queue with the same command; it picks up where the last one was killed:
#   nohup nice -n 19 bash bench/cpu_queue.sh runs/bin/autosampler-<commit> >> runs/logs/queue.log 2>&1 &
# Pause it while timing anything else: kill -STOP / -CONT on the running job's pid.
#   1. Table 1's `ours` row at full length (stage 1 = the vanilla row; cRT, LWS, searched rows)
#   2. the PyTorch reference at full length on the same split (the parity pair of issue 15)
#   3. the agent of the long CutMix comparison (encoders from row 1's model)
#   4. the CutMix rows: random p 0.5, agent p 0.5 and 0.7, CAM p 0.5 (each with every stage-2
#      classifier: candidates of the best recipe too)
#   5. the balanced-softmax stage 1 (a best-recipe candidate), then Table 1's LDAM-DRW, BBN and TDE
#      rows at full length
# The bash running this file keeps reading the copy it opened: replace the file (write a new one and
# mv it over), never edit it in place, while the queue runs.
set -eu
bin=${1:?usage: cpu_queue.sh AUTOSAMPLER_BINARY}
cpu=(--set train.device=cpu --set train.threads=2 --set train.channels_last=true)
mkdir -p runs/logs runs/ref
eval "$(./x env)"
echo "== $(date -u +%FT%TZ) queue with $bin"
"$bin" sweep configs/table1/cifar10_lt_ir100_ours_gpu.toml --root runs/table1_full "${cpu[@]}" >> runs/logs/table1_full_ours_s0.log 2>&1
echo "== $(date -u +%FT%TZ) table 1 ours row done"
if [ ! -f bench/results/ref_c10lt_ir100_e200_step_s0_cpu.json ]; then
  [ -d /tmp/cifar/cifar10 ] || { mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar; }
  python3 bench/torch_reference_resumable.py --checkpoint runs/ref/c10lt_ir100_e200_step_s0.pt -- \
    train --data /tmp/cifar/cifar10 --ir 100 --epochs 200 --schedule step --seed 0 --threads 2 --device cpu \
    --out runs/ref/ref_c10lt_ir100_e200_step_s0_cpu.json >> runs/logs/ref_e200.log 2>&1
  cp runs/ref/ref_c10lt_ir100_e200_step_s0_cpu.json bench/results/
fi
echo "== $(date -u +%FT%TZ) reference done"
if [ ! -f runs/cutmix_long/agent/agent/agent.safetensors ]; then
  resume=(); [ -f runs/cutmix_long/agent/agent/state.json ] && resume=(--resume)
  "$bin" agent train --config configs/cutmix_long/agent.toml --out runs/cutmix_long/agent "${resume[@]}" >> runs/logs/cutmix_long_agent.log 2>&1
fi
echo "== $(date -u +%FT%TZ) agent done"
for row in cutmix_p0.5 agent_p0.5 cam_p0.5 agent_p0.7; do
  "$bin" sweep "configs/cutmix_long/c10lt_ir100_e200_$row.toml" --root runs/cutmix_long "${cpu[@]}" >> "runs/logs/cutmix_long_$row.log" 2>&1
  echo "== $(date -u +%FT%TZ) $row done"
done
"$bin" sweep configs/recipes/c10lt_ir100_e200_balanced_softmax.toml --root runs/recipes "${cpu[@]}" >> runs/logs/recipes_balanced_softmax.log 2>&1
echo "== $(date -u +%FT%TZ) balanced softmax done"
for row in ldam_drw bbn tde; do
  "$bin" sweep "configs/table1/cifar10_lt_ir100_${row}_gpu.toml" --root runs/table1_full "${cpu[@]}" >> "runs/logs/table1_full_$row.log" 2>&1
  echo "== $(date -u +%FT%TZ) table 1 $row done"
done
