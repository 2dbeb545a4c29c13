"""Side-by-side CPU timing: bare ONNX Runtime run vs PoseEstimator vs rtmlib's RTMO.

All three use the same ONNX file, one 640x480 BGR frame and ONNX Runtime sessions with the
same ``intra_op_num_threads``. Calls are interleaved (bare, ours, rtmlib, bare, ...) so that
load from other processes hits all three alike; medians are reported.

    python benchmarks/bench_engine.py [--onnx FILE] [--threads 2] [--iters 10]

Targets: pipeline / bare run <= 1.05, pipeline / rtmlib <= 0.95.
"""
import argparse
import pathlib
import statistics
import time

import cv2
import numpy as np

from rtmo_ros.engine import PoseEstimator
from rtmo_ros.engine.preprocess import letterbox_image

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ONNX = REPO.parent / 'shared' / 'parity' / 'rtmo-s_coco_seed1_mmdeploy.onnx'


def make_frame(onnx_path):
    """A 640x480 BGR frame: the fixture image when present (people-like detections), else noise."""
    npz = pathlib.Path(onnx_path).with_name('rtmo-s_coco_seed1_io.npz')
    if npz.exists():
        return cv2.resize(np.load(npz)['image_bgr'], (640, 480), interpolation=cv2.INTER_AREA)
    return np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)


def session(onnx_path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])


def rtmlib_model(onnx_path, threads):
    """rtmlib's RTMO on the same file; its session is replaced by one with our thread count
    (rtmlib exposes no thread option), everything else is rtmlib's own code."""
    from rtmlib import RTMO
    model = RTMO(str(onnx_path), model_input_size=(640, 640), backend='onnxruntime',
                 device='cpu')
    model.session = session(onnx_path, threads)
    return model


def timed(fn):
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--onnx', type=pathlib.Path, default=DEFAULT_ONNX)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=10)
    args = parser.parse_args(argv)

    frame = make_frame(args.onnx)
    bare = session(args.onnx, args.threads)
    feed = {'input': letterbox_image(frame, (640, 640))[0][None]}
    est = PoseEstimator(args.onnx, backend='onnxruntime', num_threads=args.threads)
    rtm = rtmlib_model(args.onnx, args.threads)
    for _ in range(2):  # warm-up: arena allocation, first-run kernels
        bare.run(None, feed), est(frame), rtm(frame)

    times = {'bare': [], 'ours': [], 'rtmlib': []}
    stages = []
    for _ in range(args.iters):
        times['bare'].append(timed(lambda: bare.run(None, feed)))
        times['ours'].append(timed(lambda: est(frame)))
        stages.append(est.timings)
        times['rtmlib'].append(timed(lambda: rtm(frame)))
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f'RTMO ONNX {args.onnx.name}, 640x480 frame, {args.threads} threads, '
          f'{args.iters} interleaved iterations, medians:')
    for name in ('preprocess_ms', 'inference_ms', 'postprocess_ms'):
        print(f'  ours {name:<15} {statistics.median(getattr(s, name) for s in stages):8.2f}')
    for name, value in med.items():
        print(f'  {name:<21} {value:8.2f} ms')
    print(f'  pipeline / bare run  {med["ours"] / med["bare"]:8.3f}   (target <= 1.05)')
    print(f'  pipeline / rtmlib    {med["ours"] / med["rtmlib"]:8.3f}   (target <= 0.95)')
    est.close()


if __name__ == '__main__':
    main()
