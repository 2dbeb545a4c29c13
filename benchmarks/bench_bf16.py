"""bf16 vs fp32 on the openvino backend (CPU with native bf16): speed, keypoint drift and AP.

    python benchmarks/bench_bf16.py [--onnx FILE] [--threads 2] [--iters 20] [--photo FILE]

1. Speed: PoseEstimator on the RTMO-s graph (default the parity fixture, 640), one 640x480
   frame: onnxruntime fp32, openvino fp32 and openvino bf16, calls alternating with a 0.1 s
   pause before each, medians and the ratios.
2. Drift: the bundled model, openvino fp32 vs bf16 keypoints on 48 rendered frames, persons
   matched by box IoU (as ``bench_int8``).
3. AP: the bundled model on the 24-frame demo bag (seed 11, 320x240) offline without
   smoothing: onnxruntime fp32 against openvino bf16.
4. With ``--photo`` (a real photograph, e.g. scikit-image's astronaut saved as PNG): drift on
   it with the RTMO-s weights of ``--onnx``.
"""
import argparse
import pathlib
import statistics
import sys
import tempfile

import numpy as np

from rtmo_ros.engine import PoseEstimator, zoo

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_engine import timed  # noqa: E402
from bench_int8 import DEFAULT_ONNX, keypoint_drift  # noqa: E402

RUNS = (('onnxruntime', 'fp32'), ('openvino', 'fp32'), ('openvino', 'bf16'))


def speed(onnx_path, threads, iters):
    from rtmo_train.data.synthetic import render_sequence

    frame = next(render_sequence(3, 1, 640, 480))[0]
    ests = {run: PoseEstimator(str(onnx_path), backend=run[0], precision=run[1],
                               num_threads=threads) for run in RUNS}
    times = {run: [] for run in ests}
    for _ in range(2):  # warm-up
        for est in ests.values():
            est(frame)
    for _ in range(iters):
        for run, est in ests.items():
            times[run].append(timed(lambda est=est: est(frame)))  # after a 0.1 s pause
    med = {run: statistics.median(t) for run, t in times.items()}
    print(f'speed  {onnx_path.name}, {threads} threads, {iters} iterations: ' + ', '.join(
        f'{b} {p} {m:.1f} ms' for (b, p), m in med.items()))
    base = med[('onnxruntime', 'fp32')]
    print(f'       openvino fp32 / onnxruntime fp32 = {med[RUNS[1]] / base:.3f}; '
          f'openvino bf16 is {base / med[RUNS[2]]:.2f}x onnxruntime fp32, '
          f'{med[RUNS[1]] / med[RUNS[2]]:.2f}x openvino fp32')


def drift(threads, count=48):
    from rtmo_train.data.synthetic import render_sequence

    model = str(zoo.bundled_path())
    fp32, bf16 = (PoseEstimator(model, backend='openvino', precision=p, num_threads=threads)
                  for p in ('fp32', 'bf16'))
    frames = (next(render_sequence(seed, 1, 320, 240))[0] for seed in range(1000, 1000 + count))
    dists, differ = keypoint_drift(fp32, bf16, frames)
    print(f'drift  bundled model, {count} rendered frames, openvino fp32 vs bf16: median '
          f'{np.median(dists):.2f} px, p90 {np.percentile(dists, 90):.2f} px over {dists.size} '
          f'joints; person count differs in {differ} frames')


def bag_ap():
    from rtmo_ros import bag_eval, demo_bag

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        bag, gt = demo_bag.write_demo_bag(tmp / 'bag', frames=24, seed=11, width=320,
                                          height=240, progress=False)
        ap = {f'{b} {p}': bag_eval.evaluate_bag(
            bag, gt=gt, model=str(zoo.bundled_path()), backend=b, out=tmp / f'{b}-{p}',
            progress=False, smoothing=False, node_params=[f'precision:={p}'])['ap']
            for b, p in (RUNS[0], RUNS[2])}
    print('AP     bundled model, 24-frame demo bag: ' + ', '.join(
        f'{k} {v:.4f}' for k, v in ap.items()))


def photo_drift(onnx_path, photo, threads):
    import cv2

    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    fp32, bf16 = (PoseEstimator(str(onnx_path), backend='openvino', precision=p,
                                num_threads=threads) for p in ('fp32', 'bf16'))
    dists, _ = keypoint_drift(fp32, bf16, [image])
    a, b = fp32(image), bf16(image)
    print(f'photo  {photo.name} {image.shape[1]}x{image.shape[0]}: fp32 {len(a)} people, bf16 '
          f'{len(b)}; drift over {dists.size // 17} matched: median {np.median(dists):.2f} px, '
          f'p90 {np.percentile(dists, 90):.2f} px, max {dists.max():.2f} px')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--onnx', type=pathlib.Path, default=DEFAULT_ONNX)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--photo', type=pathlib.Path, help='a real photograph (PNG/JPEG)')
    args = parser.parse_args(argv)
    speed(args.onnx, args.threads, args.iters)
    drift(args.threads)
    bag_ap()
    if args.photo:
        photo_drift(args.onnx, args.photo, args.threads)


if __name__ == '__main__':
    main()
