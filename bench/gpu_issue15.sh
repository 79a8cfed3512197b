#!/usr/bin/env bash
# Issue 15 on the device machine in one go: the 200-epoch parity pair and Table 1's full-length
# CIFAR-10-LT IR 100 rows, run side by side (one H200 and 16 cores hold seven ResNet-32 runs; each
# alone leaves the GPU mostly idle). Rows:
#   ours      CE stage 1 with the LDAM recipe, then the search and stage 2: its eval.json is the
#             vanilla row and the autosampler side of parity, its stage2/eval.json the cRT rows
#             (class-balanced, square-root), LWS, τ-norm, logit adjustment and the searched row
#   ldam_drw, bbn, tde   their _gpu configs
#   cutmix, recipe_bs    random CutMix p 0.5 (issue 12's row) and balanced softmax: best-recipe
#             candidates; `table --best` picks the recipe on val over every run × stage-2 classifier
#   torch_reference.py train --epochs 200 --schedule step (same data, split, seed, recipe)
# Expects stripped `autosampler`, cifar10-jpeg.tar.gz and torch_reference.py in .gpu/ (see
# bench/README.md). Writes to $OUT: each run's log and run folder, table1_c10lt_ir100.md (the
# output of `autosampler table`), and parity_c10lt_ir100_e200.json (one JSON line).
# A CPU dry run of the script's plumbing: DEVICE=cpu EPOCHS=1 PY=python3 THREADS=1 bash bench/gpu_issue15.sh
set -u
PY=${PY:-/opt/torch/.venv/bin/python}
export LD_LIBRARY_PATH=$($PY -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export AUTOSAMPLER_CACHE=${AUTOSAMPLER_CACHE:-/tmp/ascache}
OUT=${OUT:-/tmp/out}
EPOCHS=${EPOCHS:-200}
DEVICE=${DEVICE:-cuda}
THREADS=${THREADS:-2}
LIMIT=${LIMIT:-540}
ROOT=${ROOT:-/tmp/t1}
data="$PWD/.gpu/cifar10-jpeg.tar.gz"
mkdir -p "$OUT" /tmp/cifar
[ -n "$(command -v nvidia-smi)" ] && nvidia-smi -L
tar xzf "$data" -C /tmp/cifar
set_args=(--set "data.source.root=$data" --set "train.epochs=$EPOCHS" --set "train.device=$DEVICE" --set "train.threads=$THREADS")
# the packed cache once, before the runs share it
.gpu/autosampler data prepare --config configs/table1/cifar10_lt_ir100_vanilla_gpu.toml --root "$data" --out /tmp/prep >/dev/null
start=$(date +%s)
# Table 1's rows, then two stage-1 candidates of the best recipe that need no other run first
# (random CutMix, balanced softmax; the agent and CAM rows need the `ours` model)
rows=(ours ldam_drw bbn tde cutmix recipe_bs)
config() {
  case $1 in
    cutmix) echo configs/cutmix_long/c10lt_ir100_e200_cutmix_p0.5.toml ;;
    recipe_bs) echo configs/recipes/c10lt_ir100_e200_balanced_softmax.toml ;;
    *) echo "configs/table1/cifar10_lt_ir100_${1}_gpu.toml" ;;
  esac
}
for row in "${rows[@]}"; do
  extra=()
  # a shortened dry run keeps DRW inside it (at 160 of 200 epochs in the real run)
  [ "$row" = ldam_drw ] && [ "$EPOCHS" != 200 ] && extra=(--set "train.drw.start_epoch=$((EPOCHS * 4 / 5))")
  timeout "$LIMIT" .gpu/autosampler sweep "$(config "$row")" --root "$ROOT" \
    "${set_args[@]}" "${extra[@]}" >"$OUT/$row.log" 2>&1 &
done
timeout "$LIMIT" $PY .gpu/torch_reference.py train --data /tmp/cifar/cifar10 --ir 100 --epochs "$EPOCHS" \
  --schedule step --seed 0 --device "$DEVICE" --threads 4 --out "$OUT/ref_c10lt_ir100_e${EPOCHS}_s0.json" \
  >"$OUT/ref.log" 2>&1 &
wait
echo "wall: $(( $(date +%s) - start )) s"
# whole run folders (checkpoints included: a run the limit cut short resumes from them when carried
# back), and the end of each log
mkdir -p "$OUT/runs" && cp -r "$ROOT"/* "$OUT/runs/" 2>/dev/null
for row in "${rows[@]}" ref; do echo "== $row"; tail -n 4 "$OUT/$row.log"; done
# the table of the runs that got to their evaluation (a row the limit cut short is left out)
done_runs=(); for d in "$ROOT"/*; do [ -f "$d/eval.json" ] && done_runs+=("$d"); done
.gpu/autosampler table "${done_runs[@]}" --stage2-rows --best "$OUT/best_recipe_c10lt_ir100_e$EPOCHS.json" >"$OUT/table1_c10lt_ir100.md" 2>&1
cat "$OUT/table1_c10lt_ir100.md"
$PY bench/parity.py --ours "$ROOT/cifar10_lt_ir100_ours_gpu_s0/eval.json" \
  --torch "$OUT/ref_c10lt_ir100_e${EPOCHS}_s0.json" --epochs "$EPOCHS" | tee "$OUT/parity_c10lt_ir100_e$EPOCHS.json"
true
