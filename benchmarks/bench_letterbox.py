"""Side-by-side CPU timing: our exact letterbox vs the cv2.warpAffine path it replaced.

``ours`` is ``letterbox_image`` (OpenCV 5.0's pixels under any OpenCV, written straight into
the (3, H, W) float32 input). ``warpAffine`` is the previous path: ``cv2.warpAffine`` of the
installed OpenCV, then the HWC uint8 -> CHW float32 copy. Calls are interleaved so that load
from other processes hits both alike; medians are reported, with ours / warpAffine.

    python benchmarks/bench_letterbox.py [--iters 200]
"""
import argparse
import statistics
import time

import cv2
import numpy as np

from rtmo_ros.engine.preprocess import PAD_VALUE, fit_letterbox, letterbox_image

CASES = ((1920, 1080, 640), (1280, 720, 640), (640, 480, 640), (720, 480, 416),
         (720, 480, 640), (333, 777, 640), (480, 640, 640))


def warp_affine_path(image, size, out):
    """The letterbox before: OpenCV's own warp, then one HWC uint8 -> CHW float32 copy."""
    box = fit_letterbox(image.shape[:2], (size, size))
    matrix = np.array([[box.scale, 0.0, box.offset_x], [0.0, box.scale, box.offset_y]])
    warped = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
    np.copyto(out, warped.transpose(2, 0, 1), casting='unsafe')


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=200)
    args = parser.parse_args()
    print(f'OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads')
    print(f'{"image -> input":22} {"ours ms":>8} {"warpAffine ms":>14} {"ratio":>6}')
    rng = np.random.default_rng(0)
    for w, h, size in CASES:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = np.empty((3, size, size), np.float32)
        letterbox_image(image, (size, size), out)  # builds and caches the tables
        ours, theirs = [], []
        for _ in range(args.iters):
            ours.append(timed(letterbox_image, image, (size, size), out))
            theirs.append(timed(warp_affine_path, image, size, out))
        a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
        print(f'{w}x{h} -> {size}x{size}'.ljust(22) + f' {a:8.3f} {b:14.3f} {a / b:6.2f}')


if __name__ == '__main__':
    main()
