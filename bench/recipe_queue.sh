#!/usr/bin/env bash
# The recipe comparison's long CPU runs, one at a time (two libtorch processes on 2 cores slow each
# other several-fold), each 200 epochs in bf16 (about 75 min on an AVX-512 2-core CPU):
#   nohup nice -n 19 bash bench/recipe_queue.sh runs/bin/autosampler-<commit> >> runs/logs/recipes.log 2>&1 &
# Pause it while timing anything else: kill -STOP / -CONT on the running job's pid. A killed row
# resumes from its run folder with the same command. A finished row's config.toml, eval.json and
# stage2/eval.json are copied into bench/results/runs/<root>/<run>/ (commit them: `autosampler table
# bench/results/runs/recipes/* --stage2-rows --best FILE` compares the candidates on validation).
#   1. CIFAR-10-LT IR 100: the AutoAugment + Cutout candidate, seed 0
#   2. the Tiny-ImageNet 100-class long tail (configs/tiny100_lt/): Table 1's rows (cross-entropy
#      with stage 2, LDAM-DRW, balanced softmax), the shipped recipe, the AutoAugment candidate
#   3. seeds 1 and 2 of what is still open
set -eu
bin=${1:?usage: recipe_queue.sh AUTOSAMPLER_BINARY}
cpu=(--set train.device=cpu --set train.threads=2 --set train.precision=bf16 --set train.channels_last=true)
mkdir -p runs/logs
put() { cp "$1" "$2.part" && mv "$2.part" "$2"; }
row() {  # row CONFIG ROOT SEED
  local name d k
  name=$(basename "$1" .toml)
  "$bin" sweep "$1" --root "runs/$2" --seeds "$3" "${cpu[@]}" >> "runs/logs/$2_$name.log" 2>&1
  d="runs/$2/$(sed -n 's/^name = "\(.*\)"/\1/p' "$1")_s$3"
  k="bench/results/runs/$2/$(basename "$d")"
  [ -f "$d/eval.json" ] || return 0
  mkdir -p "$k/stage2" && put "$d/config.toml" "$k/config.toml" && put "$d/eval.json" "$k/eval.json"
  [ -f "$d/stage2/eval.json" ] && put "$d/stage2/eval.json" "$k/stage2/eval.json"
  echo "== $(date -u +%FT%TZ) $2 $(basename "$d") done"
}
row configs/recipes/c10lt_ir100_e200_balanced_softmax_cutmix_p0.5_autoaugment_cutout.toml recipes 0
for r in ce ldam_drw balanced_softmax balanced_softmax_cutmix_p0.5_randaugment balanced_softmax_cutmix_p0.5_autoaugment_cutout; do
  row "configs/tiny100_lt/$r.toml" tiny100_lt 0
done
# 4. CIFAR-10-LT IR 100 candidates with the newer levers, seed 0: the chosen recipe with SAM
#    (rho 0.05; two passes a step, about 150 min in bf16 here), weight balancing's two stages
row configs/recipes/c10lt_ir100_e200_balanced_softmax_cutmix_p0.5_randaugment_sam0.05.toml recipes 0
row configs/recipes/c10lt_ir100_e200_weight_balancing.toml recipes 0
# 5. the AutoAugment + Cutout candidate's seed 1 (validation picks it on seed 0 by two images)
row configs/recipes/c10lt_ir100_e200_balanced_softmax_cutmix_p0.5_autoaugment_cutout.toml recipes 1
# 6. MiSLAS's two stages (mixup, then label-aware smoothing in stage 2), seed 0
row configs/recipes/c10lt_ir100_e200_mislas.toml recipes 0
# 7. seeds 1 and 2 of the Tiny-ImageNet long tail's Table-1 rows and of the CIFAR pick on it
for s in 1 2; do
  for r in ce ldam_drw balanced_softmax balanced_softmax_cutmix_p0.5_randaugment; do
    row "configs/tiny100_lt/$r.toml" tiny100_lt "$s"
  done
done
