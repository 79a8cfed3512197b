#!/usr/bin/env bash
# The long CPU jobs of issues 15 and 12, one at a time (two libtorch processes on 2 cores slow each
# other several-fold), in order, each skipped when its result is already in bench/results/:
#   nohup nice -n 19 bash bench/cpu_queue.sh runs/bin/autosampler-<commit> >> runs/logs/queue.log 2>&1 &
# Pause it while timing anything else: kill -STOP / -CONT on the running job's pid.
# A job resumes after a kill from its run folder (runs/, not committed). On the AVX-512 machine kind
# a 200-epoch row takes about 65–100 minutes, on the AVX2 kind about 3.5 h. A finished row's
# eval.json and stage2/eval.json are copied into bench/results/ at once (commit them), and the
# table's inputs into bench/results/runs/ (`autosampler table bench/results/runs/*/* --stage2-rows`
# is Table 1 and the CutMix comparison from the repository). Run folders and models over 2 MB are
# not committed (scripts/check_repo.sh): the LDAM-DRW locator (1.9 MB) is, the agent is retrained
# by the queue where bench/models/cutmix_long_agent/ is absent.
#   1. the PyTorch reference at full length (the parity pair of issue 15), then its parity line
#   2. LDAM-DRW with its search and stage 2 (Table 1's row; best-recipe candidates; its model
#      starts the agent's encoders and is the CAM rows' locator)
#   3. the agent (configs/cutmix_long/agent.toml), then agent CutMix p 0.5 (also Table 1's "ours +
#      agent CutMix"), random CutMix p 0.5 and CAM CutMix p 0.5 (issue 12's rows; candidates of the best recipe)
#   4. balanced softmax with CutMix p 0.5, then balanced softmax (best-recipe candidates)
#   5. Table 1's TDE row, balanced softmax + CutMix + RandAugment (best-recipe candidate), Table
#      1's BBN row, then agent CutMix p 0.7
#   6. balanced softmax + agent CutMix p 0.5, then the pick of 5 with weight decay 5e-4 (best-recipe
#      candidates)
#   7. a second seed of the pick (seed 1)
# AFTER=PID: wait for that process (a sweep of an earlier queue) to end before starting.
# The bash running this file keeps reading the copy it opened: replace the file (write a new one and
# mv it over), never edit it in place, while the queue runs.
set -eu
bin=${1:?usage: cpu_queue.sh AUTOSAMPLER_BINARY}
cpu=(--set train.device=cpu --set train.threads=2 --set train.channels_last=true)
mkdir -p runs/logs runs/ref
eval "$(./x env)"
echo "== $(date -u +%FT%TZ) queue with $bin"
if [ -n "${AFTER:-}" ]; then
  while kill -0 "$AFTER" 2>/dev/null; do sleep 60; done
  echo "== $(date -u +%FT%TZ) process $AFTER ended"
fi
put() {  # put FROM TO: copy atomically (a kill leaves the old file or none, never half of one)
  cp "$1" "$2.part" && mv "$2.part" "$2"
}
keep() {  # keep ROOT NAME TAG [SEED]: copy a finished run's results into bench/results/, and what
  # `autosampler table` reads of it (config.toml, eval.json, stage2/eval.json) into
  # bench/results/runs/<root's name>/<name>_s<seed>/, so the tables are rebuilt from the repository
  # bench/results/<tag>_eval.json marks the row done (`row` skips it), so it is written last
  local s="${4:-0}" d k
  d="$1/$2_s$s" k="bench/results/runs/$(basename "$1")/$2_s$s"
  [ -f "$d/eval.json" ] || return 0
  mkdir -p "$k" && put "$d/config.toml" "$k/config.toml" && put "$d/eval.json" "$k/eval.json"
  if [ -f "$d/stage2/eval.json" ]; then
    mkdir -p "$k/stage2" && put "$d/stage2/eval.json" "$k/stage2/eval.json"
    put "$d/stage2/eval.json" "bench/results/$3_stage2.json"
  fi
  put "$d/eval.json" "bench/results/$3_eval.json"
}
row() {  # row CONFIG ROOT TAG [SEED] (seed 0 unless given)
  local name; name=$(basename "$1" .toml)
  if [ -f "bench/results/$3_eval.json" ]; then echo "== $3 already in bench/results"; return 0; fi
  "$bin" sweep "$1" --root "$2" --seeds "${4:-0}" "${cpu[@]}" >> "runs/logs/$3.log" 2>&1
  keep "$2" "$name" "$3" "${4:-0}"
  echo "== $(date -u +%FT%TZ) $3 done"
}
if [ ! -f bench/results/ref_c10lt_ir100_e200_step_s0_cpu.json ]; then
  [ -d /tmp/cifar/cifar10 ] || { mkdir -p /tmp/cifar && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/cifar; }
  python3 bench/torch_reference_resumable.py --checkpoint runs/ref/c10lt_ir100_e200_step_s0.pt -- \
    train --data /tmp/cifar/cifar10 --ir 100 --epochs 200 --schedule step --seed 0 --threads 2 --device cpu \
    --out runs/ref/ref_c10lt_ir100_e200_step_s0_cpu.json >> runs/logs/ref_e200.log 2>&1
  cp runs/ref/ref_c10lt_ir100_e200_step_s0_cpu.json bench/results/
fi
echo "== $(date -u +%FT%TZ) reference done"
row configs/table1/cifar10_lt_ir100_ldam_drw_gpu.toml runs/table1_full table1_c10lt_ir100_e200_ldam_drw_cpu
# the locator of the agent and CAM rows, kept in the repository (1.9 MB) so that those rows do not
# cost a rerun of LDAM-DRW in a session that lost runs/
ldam=bench/models/c10lt_ir100_e200_ldam_drw_s0_cpu.safetensors
if [ ! -f "$ldam" ]; then
  mkdir -p bench/models && put runs/table1_full/cifar10_lt_ir100_ldam_drw_gpu_s0/model.safetensors "$ldam"
fi
# the agent of the agent rows (6.9 MB, not committed): trained once on this machine, so that every
# agent row mixes with the same agent
agent=bench/models/cutmix_long_agent
if [ ! -f "$agent/agent.safetensors" ]; then
  if [ ! -f runs/cutmix_long/agent/agent/agent.safetensors ]; then
    resume=(); [ -f runs/cutmix_long/agent/agent/state.json ] && resume=(--resume)
    "$bin" agent train --config configs/cutmix_long/agent.toml --out runs/cutmix_long/agent "${resume[@]}" >> runs/logs/cutmix_long_agent.log 2>&1
  fi
  mkdir -p "$agent" && put runs/cutmix_long/agent/agent/agent.json "$agent/agent.json" &&
    put runs/cutmix_long/agent/agent/agent.safetensors "$agent/agent.safetensors"
fi
echo "== $(date -u +%FT%TZ) agent done"
for r in agent_p0.5 cutmix_p0.5 cam_p0.5; do
  row "configs/cutmix_long/c10lt_ir100_e200_$r.toml" runs/cutmix_long "cutmix_long_c10lt_ir100_e200_${r}_cpu"
done
# the best recipe's candidates before the last CutMix row: balanced softmax with CutMix (the two
# parts that each won alone), then balanced softmax alone
for r in balanced_softmax_cutmix_p0.5 balanced_softmax; do
  row "configs/recipes/c10lt_ir100_e200_$r.toml" runs/recipes "recipes_c10lt_ir100_e200_${r}_cpu"
done
# Table 1's TDE row and the best recipe with RandAugment (about 1.2-1.5 h each here), Table 1's
# BBN row (about 2.7 h: two batches a step, 37-56 s an epoch on the AVX-512 kind), then agent
# CutMix p 0.7 (about 1-1.5 h: it pastes the committed agent's saved locations, 19-23 s an epoch
# on the AVX-512 kind when nothing else runs)
row configs/table1/cifar10_lt_ir100_tde_gpu.toml runs/table1_full table1_c10lt_ir100_e200_tde_cpu
r=balanced_softmax_cutmix_p0.5_randaugment
row "configs/recipes/c10lt_ir100_e200_$r.toml" runs/recipes "recipes_c10lt_ir100_e200_${r}_cpu"
row configs/table1/cifar10_lt_ir100_bbn_gpu.toml runs/table1_full table1_c10lt_ir100_e200_bbn_cpu
row configs/cutmix_long/c10lt_ir100_e200_agent_p0.7.toml runs/cutmix_long cutmix_long_c10lt_ir100_e200_agent_p0.7_cpu
# two more best-recipe candidates: balanced softmax with agent CutMix p 0.5 (the issue's grid cell,
# and agent against random boxes under a second loss; about 1.3 h here), then the pick with weight
# decay 5e-4 (about 1.3-1.5 h)
r=balanced_softmax_agent_p0.5
row "configs/recipes/c10lt_ir100_e200_$r.toml" runs/recipes "recipes_c10lt_ir100_e200_${r}_cpu"
r=balanced_softmax_cutmix_p0.5_randaugment_wd5e-4
row "configs/recipes/c10lt_ir100_e200_$r.toml" runs/recipes "recipes_c10lt_ir100_e200_${r}_cpu"
# a second seed of the pick (seed 1: its own split, long-tail draw, training, search and stage-2
# seeds), so that the best recipe's test top-1 is a mean ± std over seeds (about 1.3 h here)
r=balanced_softmax_cutmix_p0.5_randaugment
row "configs/recipes/c10lt_ir100_e200_$r.toml" runs/recipes "recipes_c10lt_ir100_e200_${r}_s1_cpu" 1
