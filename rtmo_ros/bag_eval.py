"""rtmo-bag-eval: replay a rosbag2 image topic through RTMO; report AP, drops and latency.

``offline`` runs the engine on every frame in this process (accuracy of the model, engine
time). ``online`` publishes the frames at their recorded pace (times ``--rate``) into a real
``rtmo_pose`` node over DDS and records what it publishes (accuracy as the robot sees it,
frames dropped, end-to-end latency). See ``rtmo_ros.bag_report`` for the ground-truth stamp
convention and the report's contents.
"""
import argparse
import pathlib
import shutil
import sys
import time

from tqdm import tqdm

from rtmo_ros import bag_io, bag_report
from rtmo_ros.bag_io import BagError
from rtmo_ros.bag_report import RunResult

POSES_TOPIC = '/poses'  # topic of the PersonArray messages in poses_bag/


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='rtmo-bag-eval', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('bag', help='rosbag2 directory (sqlite3 or mcap) or .db3/.mcap file')
    parser.add_argument('--gt', help='COCO keypoint JSON whose images carry stamp_ns (header '
                                     'stamp in ns); without it only drops and latency are '
                                     'reported')
    parser.add_argument('--topic', help='image topic (Image or CompressedImage); default: the '
                                        "bag's only image topic")
    parser.add_argument('--mode', choices=('offline', 'online'), default='offline')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='online replay speed: 2 plays twice as fast as recorded')
    parser.add_argument('--model', required=True,
                        help='.onnx/.engine/.pth file or model zoo name')
    parser.add_argument('--backend', default='auto',
                        choices=('auto', 'onnxruntime', 'tensorrt', 'torch'))
    parser.add_argument('--score-thr', type=float, default=0.1,
                        help='minimum instance score of a kept person (the node default)')
    parser.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                        help='online: extra pose node parameter (repeatable)')
    parser.add_argument('--out', default='bag_eval', help='output folder')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = evaluate_bag(args.bag, gt=args.gt, topic=args.topic, mode=args.mode,
                              rate=args.rate, model=args.model, backend=args.backend,
                              out=args.out, score_thr=args.score_thr,
                              node_params=args.node_param, progress=not args.quiet)
    except (BagError, FileNotFoundError, ValueError) as exc:
        print(f'rtmo-bag-eval: error: {exc}', file=sys.stderr)
        return 2
    lat = report['latency_ms']
    ap = 'n/a' if report['ap'] is None else f"{report['ap']:.3f}"
    p50 = 'n/a' if lat['p50'] is None else f"{lat['p50']:.1f}"
    p95 = 'n/a' if lat['p95'] is None else f"{lat['p95']:.1f}"
    print(f"{report['frames']} frames, {report['dropped']} dropped, AP {ap}, latency p50 "
          f"{p50} ms p95 {p95} ms -> {pathlib.Path(args.out) / 'report.md'}")
    return 0


def evaluate_bag(bag, gt=None, topic=None, mode='offline', rate=1.0, model=None,
                 backend='auto', out='bag_eval', score_thr=0.1, node_params=(),
                 progress=True):
    """Replay ``bag`` (offline or online), evaluate against ``gt``, write the report to ``out``.

    Returns the report.json dict. Everything that can be checked cheaply (bag, topic, GT
    stamps, output folder) is checked before the run starts.
    """
    if mode not in ('offline', 'online'):
        raise ValueError(f'mode must be offline or online, got {mode!r}')
    out = pathlib.Path(out)
    gt_all = bag_report.load_gt(gt) if gt else None
    reader = bag_io.open_bag(bag)
    try:
        topic = bag_io.choose_topic(reader, topic)
        if gt_all is not None:  # fail now, not after the replay, when no stamp matches
            bag_report.match_gt(gt_all, bag_io.read_stamps(reader, topic), f'topic {topic}')
        _prepare_out(out)
        if mode == 'offline':
            result = run_offline(reader, topic, model, backend, score_thr, progress)
        else:
            from rtmo_ros.bag_replay import replay_online
            result = replay_online(reader, topic, model, backend, rate, out / 'node.log',
                                   score_thr, node_params, progress)
        storage = _storage_of(reader)
    finally:
        reader.close()
    meta = {'bag': str(bag), 'topic': topic, 'mode': mode,
            'rate': rate if mode == 'online' else None, 'model': str(model),
            'backend': backend, 'score_thr': score_thr, 'gt': str(gt) if gt else None}
    return bag_report.write_report(out, result, gt_all, meta, storage=storage,
                                   poses_topic=POSES_TOPIC)


def run_offline(reader, topic, model, backend='auto', score_thr=0.1, progress=True):
    """Run the engine on every frame of ``topic``; return a :class:`RunResult`."""
    from rtmo_ros.engine import PoseEstimator

    store = bag_io.typestore()
    poses, latency, arrays, stamps = {}, {}, [], []
    total = bag_io.count_messages(reader, topic)
    start = time.monotonic()
    with PoseEstimator(model, backend=backend, score_thr=score_thr) as estimator:
        skeleton = estimator.skeleton.name
        frames = bag_io.read_frames(reader, topic)
        for frame in tqdm(frames, total=total, unit='frame', desc='offline',
                          disable=not progress):
            stamps.append(frame.stamp_ns)
            result = estimator(frame.decode())
            poses.setdefault(frame.stamp_ns, result)
            latency.setdefault(frame.stamp_ns, estimator.timings.total_ms)
            msg = bag_io.poses_to_person_array(result, frame.stamp_ns, frame.frame_id, skeleton)
            arrays.append((frame.log_ns, store.serialize_cdr(msg, bag_io.PERSON_ARRAY)))
        backend_name = estimator.backend
    return RunResult(stamps=stamps, poses=poses, latency_ms=latency, person_arrays=arrays,
                     skeleton=skeleton, wall_s=time.monotonic() - start, backend=backend_name)


def _prepare_out(out):
    """Create the output folder; replace a poses_bag/ left there by an earlier run."""
    out.mkdir(parents=True, exist_ok=True)
    old = out / 'poses_bag'
    if old.exists():
        if not (old / 'metadata.yaml').is_file():
            raise BagError(f'{old} exists and is not a bag from an earlier run; remove it or '
                           'choose another --out')
        shutil.rmtree(old)


def _storage_of(reader):
    """'mcap' or 'sqlite3': the storage of the input bag, reused for poses_bag/."""
    path = pathlib.Path(reader.path)
    files = [path] if path.is_file() else list(path.iterdir())
    return 'mcap' if any(f.suffix == '.mcap' for f in files) else 'sqlite3'


if __name__ == '__main__':
    sys.exit(main())
