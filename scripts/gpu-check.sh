#!/usr/bin/env bash
# GPU proof of issue 8, under 8 minutes on one GPU: CUDA tests, a short distill + finetune with AMP,
# teacher-cache images/s for SAM ViT-B and ViT-H (RANDOM weights, labelled so: timing only), stage-1
# images/s for ResNet-50 at 512 and 1024, fp32 against bf16, the batched mask decoder, and
# `kdsam bench`. JSON lands in docs/bench/gpu/ (or $1).
#
#   scripts/gpu-check.sh                      # on a GPU machine
#   DEVICE=cpu SMALL=1 scripts/gpu-check.sh /tmp/smoke   # smoke test of the script itself on a CPU
#   PACK=1 scripts/gpu-check.sh $OUT/gpu      # also one gpu-check.tar.gz of it all (a device returns few files)
#   STEPS="tests stage1" scripts/gpu-check.sh  # only some steps (of: tests train cache stage1 ddp precision decode bench)
# With 2 or more GPUs it also trains stage 1 under torchrun with DistributedDataParallel over nccl.
set -uo pipefail  # no -e: a failing step is reported and the others still run
OUT=${1:-docs/bench/gpu}
DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
STEPS=" ${STEPS:-tests train cache stage1 ddp precision decode bench} "
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT  # data, caches and runs: the results are copied to $OUT
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 KDSAM_CACHE="$WORK/cache"
PY=${PYTHON:-python3}
kdsam() { "$PY" -m kdsam "$@"; }
step() { echo "== $(date +%T) $*"; }
want() { [[ "$STEPS" == *" $1 "* ]]; }

if [ "$SMALL" = 1 ]; then  # tiny sizes: proves every command line runs, times nothing
  N=12 EPOCHS=1 STUDENT=resnet18 SIZES="64" TEACHERS="litemedsam" BENCH="student:resnet18@64" SCALING=6
else
  N=64 EPOCHS=2 STUDENT=resnet50 SIZES="512 1024" TEACHERS="sam_vit_b sam_vit_h" SCALING=96
  BENCH="litemedsam,student:resnet50@512,student:resnet50@1024,sam_vit_b"
fi

step "environment"
"$PY" - "$OUT/environment.json" <<'PY'
import json, platform, sys, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
info = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported()}
print(info)
json.dump(info, open(sys.argv[1], "w"), indent=2)
PY

want tests && step "CUDA-marked tests" && { "$PY" -m pytest -q -m cuda tests/distill/test_cuda.py -p no:cacheprovider -rs --tb=short -W ignore::DeprecationWarning || echo "CUDA TESTS FAILED"; }

step "synthetic data ($N images)"
"$PY" -c "from kdsam.data.synthetic import write_synthetic; write_synthetic('$WORK/data', n=$N)"
DATA="folder:$WORK/data"

if want train; then
  step "distill + finetune on $DEVICE (AMP on CUDA; stage 1 accumulates 2 forwards and checkpoints mid-epoch)"
  kdsam distill --device "$DEVICE" --data "$DATA" --out "$WORK/run" --backbone "$STUDENT" --input-size 256 \
    --epochs "$EPOCHS" --batch-size 4 --accumulate 2 --checkpoint-minutes 0.02 --max-side 512
  kdsam finetune --device "$DEVICE" --run-dir "$WORK/run" --data "$DATA" --epochs "$EPOCHS" --batch-size 8 \
    --max-side 512 --augment flip,scale,intensity
  cp "$WORK/run/config.json" "$OUT/run-config.json"
  cp "$WORK/run/metrics.jsonl" "$OUT/run-metrics.jsonl"
  cp "$WORK/run/log.txt" "$OUT/run-log.txt"
fi

if want cache; then
  step "teacher cache images/s: $TEACHERS (random weights, timing only)"
  for t in $TEACHERS; do
    kdsam cache --teacher "$t" --random-weights --data "$DATA" --split train --device "$DEVICE" --batch-size 8 \
      --max-side 1024 --cache-dir "$WORK/cache-$t" --json "$WORK/cache-$t.json"
  done
  "$PY" -c "import json,sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1],'w'), indent=2)" \
    "$OUT/cache.json" "$WORK"/cache-*.json
fi

if want stage1; then
  step "stage-1 images/s, $STUDENT at $SIZES"
  for s in $SIZES; do
    kdsam bench-training --parts scaling --processes 1 --device "$DEVICE" --student "$STUDENT" --input-size "$s" \
      --scaling-images "$SCALING" --batch-size 8 --work "$WORK/scaling-$s" --json "$WORK/stage1-$s.json"
  done
  "$PY" -c "import json,sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1],'w'), indent=2)" \
    "$OUT/stage1.json" "$WORK"/stage1-*.json
fi

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if want ddp && [ "$DEVICE" = cuda ] && [ "$GPUS" -ge 2 ]; then
  step "stage 1 under torchrun, 2 GPUs, DistributedDataParallel over nccl, SyncBatchNorm"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m kdsam distill --device cuda --data "$DATA" \
    --out "$WORK/ddp" --backbone "$STUDENT" --input-size 256 --epochs 1 --batch-size 4 --max-side 512 --sync-bn \
    && cp "$WORK/ddp/metrics.jsonl" "$OUT/ddp-metrics.jsonl"
fi

if want precision; then
  step "fp32 vs bf16: the $STUDENT student's training step and a teacher's forward"
  kdsam bench-training --parts precision --device "$DEVICE" --student "$STUDENT" --input-size "${SIZES##* }" \
    --batch-size 4 --teachers "${TEACHERS%% *}" --random-weights --json "$OUT/precision.json"
fi

if want decode; then
  step "the mask decoder over a batch: a loop of calls vs one vmap call (stage 1's perceptual loss, stage 2)"
  kdsam bench-training --parts decode --device "$DEVICE" --batch-size 8 --json "$OUT/decode.json"
fi

if want bench; then
  step "kdsam bench --device $DEVICE"
  kdsam bench --device "${DEVICE%%:*}" --models "$BENCH" --repeats 5 --budget-s 30 --json "$OUT/bench.json"
fi
if [ "${PACK:-0}" = 1 ]; then
  tar -czf "$WORK/gpu-check.tar.gz" -C "$OUT" . && mv "$WORK/gpu-check.tar.gz" "$OUT/"
fi
step "done: $OUT"; ls -l "$OUT"
