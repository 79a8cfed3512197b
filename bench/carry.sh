#!/usr/bin/env bash
# Carries the queue's unfinished long runs (bench/cpu_queue.sh) from one session to the next.
# A 200-epoch CPU row takes 1.5-3.5 h and a session about 3 h, while runs/ is kept from one
# session to the next only sometimes: without this, the part of a row done before a session ends
# is lost whenever runs/ is.
#   bash bench/carry.sh save      at a session's end (queue paused or stopped): each unfinished
#                                 run folder of the queue's roots, whole (its checkpoint is an
#                                 epoch's commit point), into bench/carry/<root>/<run>.tar.gz;
#                                 commit them
#   bash bench/carry.sh restore   at the queue's start: unpacks each carried run whose folder
#                                 runs/ lacks; `sweep` then resumes it from its last epoch
#   bash bench/carry.sh drop ROOT RUN
#                                 a run that finished: its carry is no longer needed
#   bash bench/carry.sh finish ROOT RUN
#                                 a run that finished: its folder without the cached features
#                                 (stage 1's models, manifests, search, stage 2) into
#                                 bench/finished/<root>/<run>.tar.gz, its carry dropped; commit
#                                 it. A later build can then redo the stages after stage 1
#                                 without 1.5-3.5 h of training: `restore` unpacks these too, and
#                                 the row's own `sweep` command (as in cpu_queue.sh) reuses stage 1
#                                 and redoes the stages whose inputs changed (features are
#                                 recomputed in seconds; checked on the demo's run folder)
# A run resumed on another machine is not bit-identical to one trained on a single machine (runs
# are deterministic on one machine only); its log says where it resumed.
set -eu
roots=(table1_full cutmix_long recipes)
case "${1:-}" in
  save)
    for root in "${roots[@]}"; do
      for d in runs/"$root"/*_s[0-9]*/; do
        d=${d%/}
        [ -f "$d/stage1/last.safetensors" ] && [ ! -f "$d/eval.json" ] || continue
        mkdir -p "bench/carry/$root"
        out="bench/carry/$root/$(basename "$d").tar.gz"
        tar czf "$out.part" --exclude=.lock -C "runs/$root" "$(basename "$d")"
        mv "$out.part" "$out"
        echo "carried $d ($(python3 -c "import json;print(json.load(open('$d/stage1/state.json'))['epochs_done'])") epochs) -> $out"
      done
    done
    ;;
  restore)
    for t in bench/carry/*/*.tar.gz bench/finished/*/*.tar.gz; do
      [ -f "$t" ] || continue
      root=$(basename "$(dirname "$t")")
      run=$(basename "$t" .tar.gz)
      if [ -d "runs/$root/$run" ]; then
        echo "carry: runs/$root/$run exists, $t not unpacked"
      else
        # unpacked beside, then renamed: a kill mid-unpack leaves no half run folder to resume
        rm -rf "runs/$root/.carry" && mkdir -p "runs/$root/.carry"
        tar xzf "$t" -C "runs/$root/.carry"
        mv "runs/$root/.carry/$run" "runs/$root/$run" && rmdir "runs/$root/.carry"
        echo "carry: unpacked $t into runs/$root/$run"
      fi
    done
    ;;
  drop)
    rm -f "bench/carry/${2:?root}/${3:?run}.tar.gz"
    ;;
  finish)
    root=${2:?root} run=${3:?run}
    [ -f "runs/$root/$run/eval.json" ] || { echo "finish: runs/$root/$run has no eval.json" >&2; exit 1; }
    mkdir -p "bench/finished/$root"
    out="bench/finished/$root/$run.tar.gz"
    tar czf "$out.part" --exclude=.lock --exclude="$run/features" -C "runs/$root" "$run"
    mv "$out.part" "$out"
    rm -f "bench/carry/$root/$run.tar.gz"
    echo "kept runs/$root/$run ($(du -h "$out" | cut -f1)) -> $out"
    ;;
  *)
    sed -n '2,23p' "$0"
    exit 2
    ;;
esac
