#!/usr/bin/env bash
# rtmo-check on a GPU machine, from the source tree, without the venv and without rclpy.
#
#   scripts/device_check.sh --prepare   here, in the checkout (venv active): puts the rtmo-s
#                                       parity checkpoint and its test image into
#                                       .device-carry/ (41 MB, git-ignored: give it to the
#                                       device tool as carry: [".device-carry"])
#   scripts/device_check.sh             on the device machine: writes $OUT/check.json and
#                                       $OUT/check.txt (else into ./device-check-out)
#
# Made for the project's device machine (H200, Python 3.12 with torch, onnxruntime, onnx,
# OpenCV, scipy, tqdm, pyyaml and cuda-bindings; no rclpy, no TensorRT): the tree is copied
# there without .venv, so PYTHONPATH=. is the whole install. With a checkpoint
# ($RTMO_CHECK_CHECKPOINT, default .device-carry/rtmo-s_coco_seed1.pth when present) it
#   1. exports it with a dynamic batch axis (rtmo-export --dynamic-batch), so that batch 8
#      runs on ONNX Runtime too;
#   2. runs rtmo-check on that graph and checkpoint, on $RTMO_CHECK_IMAGE (default
#      .device-carry/parity.png) when given: ONNX Runtime CPU fp32 (the reference and a
#      case), torch CPU fp32, torch CUDA fp32 (parity <= 0.05 px) and fp16 (drift), batch 1
#      and 8, and one rtmo_train training step with AMP on CUDA. The parity weights are seeded
#      random (../shared/parity/README.md): their scores are close together, so the score
#      threshold is 0.12 ($RTMO_CHECK_SCORE_THR), where 40 people per image have distinct
#      scores, instead of 0.1, where the graph's 50-row cap cuts through equal scores.
# Without a checkpoint it checks the bundled model (ONNX Runtime CPU) and the training step;
# the torch cases are then listed as skipped. Whatever the machine lacks (CUDA / TensorRT
# execution providers, TensorRT) is listed as skipped with the reason; int8 (a CPU feature,
# calibration takes a minute) is skipped to spend the device time on the GPU.
# Exit status: rtmo-check's (0 every case that ran passed, 1 one failed) or the failing
# step's. About two minutes on the H200 once the machine is up.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CARRY=.device-carry
PARITY=${RTMO_PARITY_DIR:-../shared/parity}

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$CARRY"
  cp "$PARITY/rtmo-s_coco_seed1.pth" "$CARRY/"
  "$PYTHON" -c "import sys, cv2, numpy; cv2.imwrite(sys.argv[2], numpy.load(sys.argv[1])['image_bgr'])" \
    "$PARITY/rtmo-s_coco_seed1_io.npz" "$CARRY/parity.png"
  du -sh "$CARRY"
  echo "now run scripts/device_check.sh on the device machine; rm -r $CARRY afterwards"
  exit 0
fi

OUT=${OUT:-$PWD/device-check-out}
REPEAT=${RTMO_CHECK_REPEAT:-20}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PYTHON" --version

CKPT=${RTMO_CHECK_CHECKPOINT:-}
[ -z "$CKPT" ] && [ -f "$CARRY/rtmo-s_coco_seed1.pth" ] && CKPT="$CARRY/rtmo-s_coco_seed1.pth"
IMAGE=${RTMO_CHECK_IMAGE:-}
[ -z "$IMAGE" ] && [ -f "$CARRY/parity.png" ] && IMAGE="$CARRY/parity.png"
args=(--skip int8 --repeat "$REPEAT" --train-step --json "$OUT/check.json")
if [ -n "$CKPT" ]; then
  "$PYTHON" -m rtmo_train.export "$CKPT" "$WORK/model.onnx" --dynamic-batch
  args+=(--model "$WORK/model.onnx" --checkpoint "$CKPT"
         --score-thr "${RTMO_CHECK_SCORE_THR:-0.12}")
fi
[ -n "$IMAGE" ] && args+=(--image "$IMAGE")

set +e
"$PYTHON" -m rtmo_ros.engine.check "${args[@]}" 2>&1 | tee "$OUT/check.txt"
status=${PIPESTATUS[0]}
set -e
exit "$status"
