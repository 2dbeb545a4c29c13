"""``rtmo-pose``: run RTMO on an image, a folder of images or a video, without ROS.

    rtmo-pose INPUT [--model NAME|FILE] [--backend auto|tensorrt|onnxruntime|torch]
              [--out DIR] [--json FILE] [--score-thr 0.1] ...

Writes annotated images (same file names) or an annotated ``<stem>.mp4`` into ``--out`` and
all results into ``--json``: ``{"model", "backend", "keypoint_names", "results": [{"source",
"frame", "persons": [{"box": [x1, y1, x2, y2], "score", "keypoints": [[x, y, score], ...]}]}],
"precision"}``
in image pixels.
"""
import argparse
import json
import pathlib
import sys

import cv2

from .backends.select import BACKENDS
from .estimator import PRECISIONS

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff'}
VIDEO_SUFFIXES = {'.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v'}


def build_parser():
    parser = argparse.ArgumentParser(prog='rtmo-pose', description=__doc__.split('\n')[0])
    parser.add_argument('input', type=pathlib.Path, help='image, folder of images or video')
    parser.add_argument('--model', default='rtmo-s-body7',
                        help='zoo name, .onnx, .engine/.plan or .pth (default %(default)s)')
    parser.add_argument('--backend', default='auto', choices=BACKENDS,
                        help='auto: tensorrt > onnxruntime; openvino: CPU, asked for by name')
    parser.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: auto)')
    parser.add_argument('--precision', default='fp16', choices=PRECISIONS,
                        help='int8: ONNX Runtime on CPU only; bf16: OpenVINO on a CPU with '
                             'native bf16 (default %(default)s)')
    parser.add_argument('--ort-provider', default='auto',
                        choices=['auto', 'cpu', 'cuda', 'tensorrt'],
                        help="ONNX Runtime's execution provider (auto: CPU, or TensorRT > CUDA "
                             'on a CUDA device)')
    parser.add_argument('--out', type=pathlib.Path, help='folder for annotated output')
    parser.add_argument('--json', type=pathlib.Path, help='file for the results as JSON')
    parser.add_argument('--score-thr', type=float, default=0.1, help='person score threshold')
    parser.add_argument('--nms-thr', type=float, default=0.65, help='NMS IoU threshold')
    parser.add_argument('--max-persons', type=int, default=None)
    parser.add_argument('--kpt-thr', type=float, default=0.3, help='joint drawing threshold')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads')
    return parser


def person_records(poses):
    """Poses -> list of JSON-ready dicts (image pixels, rounded to 0.01 px)."""
    records = []
    for i in range(len(poses)):
        kpts = [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                for (x, y), s in zip(poses.keypoints[i], poses.keypoint_scores[i])]
        records.append({'box': [round(float(v), 2) for v in poses.boxes[i]],
                        'score': round(float(poses.scores[i]), 4), 'keypoints': kpts})
    return records


def image_files(path):
    """The input's image files: the file itself or a folder's images, sorted."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [path]


def run_images(est, files, args, results, progress):
    for path in progress(files, desc='rtmo-pose', unit='img'):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f'cannot read image {path}; is it an image file?')
        poses = est(image)
        results.append({'source': str(path), 'frame': 0, 'persons': person_records(poses)})
        if args.out:
            from .draw import draw_poses
            out = draw_poses(image, poses, est.skeleton, args.kpt_thr)
            cv2.imwrite(str(args.out / path.name), out)


def run_video(est, path, args, results, progress):
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f'cannot open video {path}; is the codec supported by OpenCV?')
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    try:
        for index in progress(range(total or 10 ** 9), total=total, desc='rtmo-pose',
                              unit='frame'):
            ok, frame = capture.read()
            if not ok:
                break
            poses = est(frame)
            results.append({'source': str(path), 'frame': index,
                            'persons': person_records(poses)})
            if args.out:
                from .draw import draw_poses
                if writer is None:
                    size = (frame.shape[1], frame.shape[0])
                    writer = cv2.VideoWriter(str(args.out / f'{path.stem}.mp4'),
                                             cv2.VideoWriter_fourcc(*'mp4v'), fps, size)
                writer.write(draw_poses(frame, poses, est.skeleton, args.kpt_thr))
    finally:
        capture.release()
        if writer is not None:
            writer.release()


def _progress():
    try:
        from tqdm import tqdm
        return tqdm
    except ImportError:
        return lambda iterable, **kwargs: iterable


def main(argv=None):
    """Entry point of ``rtmo-pose``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if not args.input.exists():
        print(f'rtmo-pose: error: input {args.input} does not exist', file=sys.stderr)
        return 2
    from . import PoseEstimator
    try:
        est = PoseEstimator(args.model, backend=args.backend, device=args.device,
                            score_thr=args.score_thr, nms_thr=args.nms_thr,
                            max_persons=args.max_persons, precision=args.precision,
                            num_threads=args.threads, ort_provider=args.ort_provider)
    except (OSError, ValueError, RuntimeError) as err:
        print(f'rtmo-pose: error: {err}', file=sys.stderr)
        return 2
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    header = {'model': est.model_name, 'backend': est.backend, 'precision': est.precision,
              'keypoint_names': list(est.skeleton.names)}
    results = []
    try:
        if args.input.is_file() and args.input.suffix.lower() in VIDEO_SUFFIXES:
            run_video(est, args.input, args, results, _progress())
        else:
            run_images(est, image_files(args.input), args, results, _progress())
    except ValueError as err:
        print(f'rtmo-pose: error: {err}', file=sys.stderr)
        return 1
    finally:
        est.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**header, 'results': results}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
