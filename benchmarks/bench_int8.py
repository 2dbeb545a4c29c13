"""int8 vs fp32 on ONNX Runtime (CPU): speed, keypoint drift and AP, side by side in one run.

    python benchmarks/bench_int8.py [--onnx FILE] [--threads 2] [--iters 20] [--cache DIR]

1. Speed: PoseEstimator fp32 and int8 on the RTMO-s graph (default the parity fixture, 640),
   one 640x480 frame, calls alternating (fp32, int8, fp32, ...), medians and their ratio.
   Goal (issue 14): int8 >= 1.5x faster on an AVX2-only CPU, >= 1.8x with VNNI.
2. Drift: the bundled model, fp32 vs int8 keypoints on rendered frames, persons matched by
   box IoU (Hungarian), median / p90 pixel distance over all joints of matched persons.
3. AP: the bundled model on a 24-frame demo bag (seed 11, 320x240), fp32 vs int8, offline
   rtmo-bag-eval without smoothing.
"""
import argparse
import pathlib
import statistics
import tempfile
import time

import numpy as np

from rtmo_ros.engine import PoseEstimator, quantize, zoo
from rtmo_ros.engine.postprocess import box_iou

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ONNX = REPO.parent / 'shared' / 'parity' / 'rtmo-s_coco_seed1_mmdeploy.onnx'


def cpu_flags():
    """The int8-relevant instruction sets this CPU reports."""
    text = pathlib.Path('/proc/cpuinfo').read_text() if pathlib.Path('/proc/cpuinfo').exists() \
        else ''
    words = set(text.split())
    return [f for f in ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'amx_int8') if f in words]


def speed(onnx_path, threads, iters, cache):
    from rtmo_train.data.synthetic import render_sequence

    frame = next(render_sequence(3, 1, 640, 480))[0]
    ests = {p: PoseEstimator(str(onnx_path), backend='onnxruntime', precision=p,
                             num_threads=threads, cache_dir=cache) for p in ('fp32', 'int8')}
    times = {p: [] for p in ests}
    for _ in range(3):  # warm-up
        for est in ests.values():
            est(frame)
    for _ in range(iters):
        for p, est in ests.items():
            start = time.perf_counter()
            est(frame)
            times[p].append(1e3 * (time.perf_counter() - start))
    med = {p: statistics.median(t) for p, t in times.items()}
    print(f'speed  {onnx_path.name} {ests["fp32"].input_size}, {threads} threads, {iters} '
          f'iterations: fp32 {med["fp32"]:.1f} ms, int8 {med["int8"]:.1f} ms, '
          f'fp32/int8 = {med["fp32"] / med["int8"]:.2f}x')


def keypoint_drift(fp32, int8, frames):
    """Per-joint pixel distances between matched persons of two estimators, and the count of
    frames where the person counts differ."""
    from scipy.optimize import linear_sum_assignment

    dists, differ = [], 0
    for image in frames:
        a, b = fp32(image), int8(image)
        differ += len(a) != len(b)
        if not len(a) or not len(b):
            continue
        overlap = box_iou(a.boxes, b.boxes)
        for i, j in zip(*linear_sum_assignment(-overlap)):
            if overlap[i, j] > 0.5:
                dists.extend(np.linalg.norm(a.keypoints[i] - b.keypoints[j], axis=-1))
    return np.asarray(dists), differ


def drift(cache, threads, count=48):
    from rtmo_train.data.synthetic import render_sequence

    model = str(zoo.bundled_path())
    fp32, int8 = (PoseEstimator(model, backend='onnxruntime', precision=p,
                                num_threads=threads, cache_dir=cache) for p in ('fp32', 'int8'))
    frames = (next(render_sequence(seed, 1, 320, 240))[0] for seed in range(1000, 1000 + count))
    dists, differ = keypoint_drift(fp32, int8, frames)
    print(f'drift  bundled model, {count} rendered frames: median {np.median(dists):.2f} px, '
          f'p90 {np.percentile(dists, 90):.2f} px over {dists.size} joints; person count '
          f'differs in {differ} frames')


def bag_ap(cache):
    from rtmo_ros import bag_eval, demo_bag

    fp32 = zoo.bundled_path()
    int8 = quantize.int8_path(fp32, cache)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        bag, gt = demo_bag.write_demo_bag(tmp / 'bag', frames=24, seed=11, width=320,
                                          height=240, progress=False)
        ap = {name: bag_eval.evaluate_bag(bag, gt=gt, model=str(path), backend='onnxruntime',
                                          out=tmp / name, progress=False,
                                          smoothing=False)['ap']
              for name, path in (('fp32', fp32), ('int8', int8))}
    print(f'AP     bundled model, 24-frame demo bag: fp32 {ap["fp32"]:.4f}, int8 '
          f'{ap["int8"]:.4f}, difference {ap["int8"] - ap["fp32"]:+.4f}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--onnx', type=pathlib.Path, default=DEFAULT_ONNX)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--cache', type=pathlib.Path, default=None,
                        help='int8 cache folder (default the engine cache)')
    args = parser.parse_args(argv)
    print(f'cpu    {" ".join(cpu_flags())}')
    start = time.perf_counter()
    quantize.int8_path(args.onnx, args.cache)
    print(f'calib  {args.onnx.name}: {time.perf_counter() - start:.1f} s (0 when cached)')
    speed(args.onnx, args.threads, args.iters, args.cache)
    drift(args.cache, args.threads)
    bag_ap(args.cache)


if __name__ == '__main__':
    main()
