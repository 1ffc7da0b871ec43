#!/usr/bin/env bash
# GPU check for photoseg. On a machine with one NVIDIA GPU it runs, in one go:
#   1. the built-in shape with the TQM head, trained jointly, in three variants side by side on the one
#      GPU (the small model leaves it mostly idle): a short timed run of each (images/s), then a training
#      run of BUILTIN_SECONDS; each result is evaluated on the val split, the best on the held-out split;
#   2. photoseg's training throughput in the paper's shape (recipes/paper.toml: Swin-B + BERT-base,
#      416 px, 4 groups of 8);
#   3. the PyTorch reference grser_ref.py cuda in the same command, for the ratio.
#
# Build the binary on any x86-64 machine first (no GPU needed; docs/gpu.md):
#   eval "$(bash scripts/setup-cuda-toolchain.sh)"
#   CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda --bin photoseg
# then on the GPU machine:
#   scripts/gpu-check.sh BIN REF_SCRIPT OUT [BUILTIN_SECONDS]
# (SKIP_THROUGHPUT=1 stops after the built-in model's training and evaluation.)
# Every step has its own time limit and a failure does not stop the next one. OUT/summary.txt gathers
# the figures; OUT/results.tar the logs and the trained models. Nothing here downloads anything.
set -u
BIN=$(realpath "$1"); REF=$2; OUT=$3; BUDGET=${4:-240}
RECIPES=$(cd "$(dirname "$0")/../recipes" && pwd)
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
SUM=$OUT/summary.txt
W=/tmp/photoseg-gpu; rm -rf $W; mkdir -p $W/logs
log() { echo "$*" | tee -a "$SUM"; }
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 ))s; }
# What comes back must stay small (a device run returns files of at most 16 MB): logs, and the best
# variant's model directory (about 7 MB of f32 weights for the built-in shape).
pack() { tar -C $W -czf $OUT/logs.tar.gz logs; [ -n "${best:-}" ] && tar -C $W -cf $OUT/best-model.tar model-$best; true; }
best=
trap pack EXIT

log "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$SUM"
missing=$(ldd "$BIN" | grep "not found")
[ -n "$missing" ] && log "missing libraries: $missing"

log "== data ($(el))"
timeout 120 "$BIN" synth --out $W/synth --seed 0 > $W/logs/synth.log 2>&1 || log "synth failed: $(tail -3 $W/logs/synth.log)"
timeout 60 "$BIN" synth --out $W/synth-small --seed 0 --train-albums 8 --val-albums 1 --heldout-albums 1 \
    > $W/logs/synth-small.log 2>&1 || log "small synth failed: $(tail -3 $W/logs/synth-small.log)"

# Median images/s of the logged steps after the first two (warm-up, kernel loading).
rate() { grep -o '[0-9.]* img/s' "$1" | awk 'NR>2 {print $1}' | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'; }

# The built-in shape with the TQM head in one joint stage; the variants differ in learning rate and the
# head's options. Each run's steps come from --steps. VARIANT_A/B/C name one-stage recipe files to run
# in their place.
G=${GROUPS_PER_STEP:-8}
DEV=${DEVICE_FLAG---cuda}   # DEVICE_FLAG= runs the same script on the CPU (a dry run)
variant() { # LR CENTER_V POSITION
  cat <<EOF
[model]
preset = "builtin"
center_v = $2
position = $3

[[stage]]
name = "joint"
[stage.train]
groups_per_step = $G
group_size = 8
lambda_mirror = 0
neg_ce = 1
separation = 1
seed = 0
checkpoint_every = 100
optim = { lr = $1 }
EOF
}
variant 1e-3 true false > $W/variant-a.toml
variant 1e-3 true true > $W/variant-b.toml
variant 2e-3 true true > $W/variant-c.toml
variant 1e-3 false false > $W/solo.toml
declare -A VAR=([a]="${VARIANT_A:-$W/variant-a.toml}" [b]="${VARIANT_B:-$W/variant-b.toml}" [c]="${VARIANT_C:-$W/variant-c.toml}")
declare -A WHAT=([a]="lr 1e-3, center_v" [b]="lr 1e-3, center_v, position" [c]="lr 2e-3, center_v, position")
for v in a b c; do [ "${VAR[$v]}" = "$W/variant-$v.toml" ] || WHAT[$v]=${VAR[$v]}; done

log "== built-in shape: timed runs, the three side by side ($(el))"
for v in a b c; do
  timeout 60 "$BIN" train --recipe "${VAR[$v]}" --data $W/synth --out $W/probe-$v --steps 14 --log-every 1 $DEV \
      > $W/logs/probe-$v.log 2>&1 &
done
wait
for v in a b c; do log "photoseg train, built-in shape, 128 px, $G groups of 8, variant $v (${WHAT[$v]}): $(rate $W/logs/probe-$v.log) img/s (3 runs sharing the GPU)"; done
R=$(rate $W/logs/probe-a.log)
timeout 35 "$BIN" train --recipe $W/solo.toml --data $W/synth --out $W/probe-solo --steps 14 --log-every 1 $DEV \
    > $W/logs/probe-solo.log 2>&1
log "photoseg train, built-in shape, 128 px, $G groups of 8, alone on the GPU: $(rate $W/logs/probe-solo.log) img/s"

log "== built-in training, ${BUDGET}s ($(el))"
if [ "$R" != "n/a" ]; then
  STEPS=$(awk -v r="$R" -v b="$BUDGET" -v g="$G" 'BEGIN {s = int(r * b / (8 * g) * 0.92); if (s < 50) s = 50; print s}')
  log "steps: $STEPS"
  for v in a b c; do
    timeout $((BUDGET + 35)) "$BIN" train --recipe "${VAR[$v]}" --data $W/synth --out $W/run-$v --steps "$STEPS" \
        --log-every 25 $DEV > $W/logs/train-$v.log 2>&1 &
  done
  wait
  for v in a b c; do
    # The recipe's one stage checkpoints into run-$v/STAGE/ (a run stopped by its time limit has no
    # run-$v/model yet).
    stage=$(dirname "$(ls $W/run-$v/*/latest 2>/dev/null | head -1)")
    last=$(cat $stage/latest 2>/dev/null)
    [ -z "$last" ] && { log "variant $v: no checkpoint: $(tail -3 $W/logs/train-$v.log)"; continue; }
    mkdir -p $W/model-$v && cp $stage/$last/{config.json,model.safetensors,tokenizer.json,state.json} $W/model-$v/
    log "variant $v: $last; $(grep '^step' $W/logs/train-$v.log | tail -1)"
  done
  log "== evaluation on val ($(el))"
  for v in a b c; do
    [ -d $W/model-$v ] && timeout 40 "$BIN" eval --model $W/model-$v --data $W/synth --split val --json > $W/logs/val-$v.json 2> $W/logs/val-$v.err &
  done
  wait
  best=$(python3 - "$W" 2>> "$SUM" <<'PY'
import json, sys, os
best, score = None, -1
for v in "abc":
    try: r = json.load(open(os.path.join(sys.argv[1], "logs", f"val-{v}.json")))
    except Exception: continue
    m, p, n = (r[k] or 0 for k in ("miou_positives", "accuracy_positives", "accuracy_negatives"))
    print(f"val {v}: mIoU {m:.3f} positives accepted {p:.3f} negatives rejected {n:.3f}", file=sys.stderr)
    s = m + p + n
    if s > score: best, score = v, s
print(best or "")
PY
)
  log "best on val: ${best:-none}"
  if [ -n "$best" ]; then
    timeout 40 "$BIN" eval --model $W/model-$best --data $W/synth --split heldout --json > $W/logs/heldout-$best.json 2>&1
    log "held-out, variant $best: $(tr -d '\n ' < $W/logs/heldout-$best.json)"
  fi
fi
pack

if [ -n "${SKIP_THROUGHPUT:-}" ]; then log "== done, throughput checks skipped ($(el))"; exit 0; fi
log "== PyTorch reference ($(el))"
PYTHONUNBUFFERED=1 timeout 150 python3 "$REF" cuda > $W/logs/reference.json 2> $W/logs/reference.err || log "reference failed: $(tail -3 $W/logs/reference.err)"
cat $W/logs/reference.json | tee -a "$SUM"
log "== paper shape, timed run ($(el))"
timeout 90 "$BIN" train --recipe $RECIPES/paper.toml --data $W/synth-small --out $W/paper --steps 5 --log-every 1 $DEV \
    > $W/logs/paper-probe.log 2>&1 \
    || log "paper-shape run stopped: $(grep -i -m3 'error\|panicked\|memory' $W/logs/paper-probe.log)"
P=$(rate $W/logs/paper-probe.log)
log "photoseg train, Swin-B + BERT-base, 416 px, 4 groups of 8, f32: $P img/s"
if [ "$P" = "n/a" ]; then
  # recipes/paper.toml with 1 group a step.
  sed 's/^groups_per_step = 4$/groups_per_step = 1/' $RECIPES/paper.toml > $W/paper1.toml
  timeout 45 "$BIN" train --recipe $W/paper1.toml --data $W/synth-small --out $W/paper1 --steps 5 --log-every 1 $DEV \
      > $W/logs/paper-probe1.log 2>&1 \
      || log "paper-shape run (1 group) stopped: $(grep -i -m3 'error\|panicked\|memory' $W/logs/paper-probe1.log)"
  log "photoseg train, Swin-B + BERT-base, 416 px, 1 group of 8, f32: $(rate $W/logs/paper-probe1.log) img/s"
fi
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> $W/logs/paper-probe.log 2>&1

log "== done ($(el))"
