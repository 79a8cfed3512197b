#!/usr/bin/env bash
# Stage 2 with other settings on a scratch copy of a finished run (the run itself untouched), one
# JSON line: class-balanced cRT's and the searched cRT's val / held-out / test top-1 and the
# classifier the run's model would take. From the repository root (the run's config.toml names its
# data relative to the configs it came from):
#   bash bench/stage2_lever.sh target/release/autosampler runs/choice200/<run> "las 0.3/0.0" \
#     --set 'stage2.label_aware_smoothing={head=0.3,tail=0.0}'
set -eu
bin=$1 src=$2 label=$3; shift 3
mkdir -p "${SCRATCH:-/tmp/stage2_lever}"
d=${SCRATCH:-/tmp/stage2_lever}/$(basename $src)_$(echo "$label" | tr ' /=,' '____')
rm -rf "$d"; cp -a "$src" "$d"; c=.scratch_$(basename $d).toml
trap 'rm -f "$c"' EXIT
cp "$d/config.toml" "$c"
"$bin" stage2 --config "$c" --out "$d" "$@" > "$d.log" 2>&1
python3 - "$d" "$label" <<'PY'
import json, sys
d, label = sys.argv[1], sys.argv[2]
r = json.load(open(d + "/stage2/eval.json"))
h = r.get("heldout") or {}
row = lambda k, hk: {"val": r[k]["val"]["top1"], "held": h.get(hk), "test": r[k]["test"]["top1"]}
print(json.dumps({"run": d, "stage2": label, "crt_class_balanced": row("crt_class_balanced", "crt_class_balanced"),
                  "crt_searched": row("crt", "retrained"), "model": r["classifier"],
                  "config": r["config"]}))
PY
