#!/bin/sh
# The CVPR25 challenge's entry point: the evaluator runs `sh predict.sh` in /workspace six times per
# case (the box, then each click) with the case in /workspace/inputs; every case there is answered
# afresh into /workspace/outputs as <case>.npz holding `segs`.
# Slice embeddings are kept between those calls in the cache: inside /workspace/outputs by default,
# since only the mounted folders outlive a `docker run --rm` (the evaluator reads only <case>.npz).
set -u
export KDSAM_CACHE="${KDSAM_CACHE:-${OUTPUTS:-/workspace/outputs}/.kdsam_cache}"
exec kdsam predict \
    --model "${KDSAM_MODEL:-teacher:litemedsam}" \
    ${KDSAM_RUNTIME:+--runtime "$KDSAM_RUNTIME"} \
    --device cpu \
    --input "${INPUTS:-/workspace/inputs}" \
    --out "${OUTPUTS:-/workspace/outputs}"
