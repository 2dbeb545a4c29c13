"""Several cameras through one batched engine call against one call per camera.

    python benchmarks/bench_cameras.py [--model FILE] [--cameras 4] [--threads 2] [--iters 10]

What the pose node does each frame with ``cameras: [cam0 ... cam3]``: the newest image of
every camera goes into one ``PoseEstimator.batch`` call (a dynamic-batch graph); the
alternative is one call per camera. Both run on the same images and thread count, alternating
iteration by iteration so they see the same machine load; the script prints the median time of
each for all cameras together and their ratio (batched / separate: below 1 means batching
pays). On a CPU the gain is modest (the convolutions already use every core); the same code is
what pays on a GPU, where one batch-4 launch costs little more than batch 1. Default models:
the bundled one and, when ``../shared/parity`` exists, RTMO-s at 640 (mmdeploy's graph).
"""
import argparse
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PARITY = REPO.parent / 'shared' / 'parity' / 'rtmo-s_coco_seed1_mmdeploy.onnx'


def images(count, size=(640, 480)):
    """``count`` different rendered frames of people, one per camera."""
    from rtmo_train.data.synthetic import render_sequence

    return [next(render_sequence(seed, 1, *size))[0] for seed in range(count)]


def compare(model, frames, threads, iters):
    """Return (batched seconds, separate seconds) medians for all ``frames`` together."""
    from rtmo_ros.engine import PoseEstimator

    with PoseEstimator(model, backend='onnxruntime', num_threads=threads) as est:
        if est.max_batch is not None and est.max_batch < len(frames):
            raise SystemExit(f'{model} has a fixed batch of {est.max_batch}: export it with '
                             'rtmo-export --dynamic-batch')
        est.batch(frames)  # warm-up: sessions allocate per batch size
        for frame in frames:
            est(frame)
        batched, separate = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            est.batch(frames)
            t1 = time.perf_counter()
            for frame in frames:
                est(frame)
            t2 = time.perf_counter()
            batched.append(t1 - t0)
            separate.append(t2 - t1)
    return float(np.median(batched)), float(np.median(separate))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', action='append', help='dynamic-batch .onnx (repeatable)')
    parser.add_argument('--cameras', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=10)
    args = parser.parse_args()
    from rtmo_ros.engine.zoo import bundled_path

    models = args.model or [str(bundled_path())] + ([str(PARITY)] if PARITY.exists() else [])
    frames = images(args.cameras)
    for model in models:
        batched, separate = compare(model, frames, args.threads, args.iters)
        print(f'{pathlib.Path(model).name}: {args.cameras} cameras, {args.threads} threads, '
              f'{args.iters} iterations: one batched call {1e3 * batched:.1f} ms, '
              f'{args.cameras} separate calls {1e3 * separate:.1f} ms, '
              f'batched/separate ratio (median): {batched / separate:.3f}')


if __name__ == '__main__':
    main()
