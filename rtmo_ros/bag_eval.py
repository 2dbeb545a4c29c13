"""rtmo-bag-eval: replay a rosbag2 image topic through RTMO; report AP, drops and latency.

``offline`` runs the engine on every frame in this process (accuracy of the model, engine
time). ``online`` starts a real ``rtmo_pose`` node and sends it the frames over DDS twice:
in lock-step (each frame once the previous answer is back: the AP over every frame, the same
on any machine) and at the recorded pace times ``--rate`` (``realtime`` in the report: frames
dropped, end-to-end latency, the AP with drops as misses). See ``rtmo_ros.bag_report`` for the
ground-truth stamp convention and the report's contents.
"""
import argparse
import pathlib
import sys
import time

from tqdm import tqdm

from rtmo_ros import bag_io, bag_report
from rtmo_ros.bag_io import BagError
from rtmo_ros.bag_replay import FRAME_TIMEOUT_S, replay_online
from rtmo_ros.bag_report import RunResult
from rtmo_ros.image_conversion import ImageError

POSES_TOPIC = '/poses'  # topic of the PersonArray messages in poses_bag/
REALTIME_TOPIC = '/poses_realtime'  # online: the real-time pass's PersonArrays in poses_bag/


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
                        help='online real-time pass speed: 2 plays twice as fast as recorded')
    parser.add_argument('--frame-timeout', type=float, default=FRAME_TIMEOUT_S,
                        help='online lock-step pass: seconds to wait for the answer to one '
                             'frame before it counts as a miss')
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
                              node_params=args.node_param, progress=not args.quiet,
                              frame_timeout=args.frame_timeout)
    except (BagError, FileNotFoundError, ValueError) as exc:
        print(f'rtmo-bag-eval: error: {exc}', file=sys.stderr)
        return 2
    print(headline(report) + f" -> {pathlib.Path(args.out) / 'report.md'}")
    return 0


def _num(value, digits=3):
    return 'n/a' if value is None else f'{value:.{digits}f}'


def headline(report):
    """One line: frames, AP over every frame and, online, the real-time drops and latency."""
    skipped = f", {report['invalid']} undecodable skipped" if report.get('invalid') else ''
    realtime = report.get('realtime')
    if realtime is None:
        lat = report['latency_ms']
        return (f"{report['frames']} frames{skipped}, {report['dropped']} dropped, AP "
                f"{_num(report['ap'])}, latency p50 {_num(lat['p50'], 1)} ms p95 "
                f"{_num(lat['p95'], 1)} ms")
    lat = realtime['latency_ms']
    return (f"{report['frames']} frames{skipped}; every frame (lock-step): AP "
            f"{_num(report['ap'])}, {report['timed_out']} timed out; real time "
            f"x{realtime['rate']:g}: {realtime['dropped']} dropped, AP {_num(realtime['ap'])}, "
            f"latency p50 {_num(lat['p50'], 1)} ms p95 {_num(lat['p95'], 1)} ms")


def evaluate_bag(bag, gt=None, topic=None, mode='offline', rate=1.0, model=None,
                 backend='auto', out='bag_eval', score_thr=0.1, node_params=(),
                 progress=True, frame_timeout=FRAME_TIMEOUT_S):
    """Replay ``bag`` (offline or online), evaluate against ``gt``, write the report to ``out``.

    Returns the report.json dict. Everything that can be checked cheaply (bag, topic, GT
    stamps, output folder) is checked before the run starts; then the files of an earlier run
    in ``out`` are removed. Online, the top-level figures (``ap``, ``predictions.json``) come
    from the lock-step pass over every frame, ``realtime`` from the pass at the bag's rate.
    """
    if mode not in ('offline', 'online'):
        raise ValueError(f'mode must be offline or online, got {mode!r}')
    if mode == 'online' and not (rate > 0 and frame_timeout > 0):
        raise BagError(f'--rate (a speed multiplier, got {rate}) and --frame-timeout (s, got '
                       f'{frame_timeout}) must be > 0')
    out = pathlib.Path(out)
    gt_all = bag_report.load_gt(gt) if gt else None
    reader = bag_io.open_bag(bag)
    try:
        topic = bag_io.choose_topic(reader, topic)
        if gt_all is not None:  # fail now, not after the replay, when no stamp matches
            bag_report.match_gt(gt_all, bag_io.read_stamps(reader, topic), f'topic {topic}')
        _prepare_out(out, keep=[bag] + ([gt] if gt else []))
        realtime = None
        if mode == 'offline':
            result = run_offline(reader, topic, model, backend, score_thr, progress)
        else:
            result, realtime = replay_online(reader, topic, model, backend, rate,
                                             out / 'node.log', score_thr, node_params,
                                             progress, frame_timeout)
        storage = _storage_of(reader)
    finally:
        reader.close()
    meta = {'bag': str(bag), 'topic': topic, 'mode': mode,
            'rate': rate if mode == 'online' else None, 'model': str(model),
            'backend': backend, 'score_thr': score_thr, 'gt': str(gt) if gt else None}
    if mode == 'online':
        meta['frame_timeout_s'] = frame_timeout
    return bag_report.write_report(out, result, gt_all, meta, storage=storage,
                                   poses_topic=POSES_TOPIC, realtime=realtime,
                                   realtime_topic=REALTIME_TOPIC)


def run_offline(reader, topic, model, backend='auto', score_thr=0.1, progress=True):
    """Run the engine on every frame of ``topic``; return a :class:`RunResult`.

    As in the node: an undecodable image is skipped (counted in ``invalid``), and a header
    stamp seen before is not run again (counted in ``duplicates``).
    """
    from rtmo_ros.engine import PoseEstimator

    store = bag_io.typestore()
    poses, latency, arrays, stamps, invalid, duplicates = {}, {}, [], [], [], 0
    total = bag_io.count_messages(reader, topic)
    start = time.monotonic()
    with PoseEstimator(model, backend=backend, score_thr=score_thr) as estimator:
        skeleton = estimator.skeleton.name
        frames = bag_io.read_frames(reader, topic)
        for frame in tqdm(frames, total=total, unit='frame', desc='offline',
                          disable=not progress):
            try:
                image = frame.decode()
            except ImageError:
                invalid.append(frame.stamp_ns)
                continue
            if frame.stamp_ns in poses:
                duplicates += 1
                continue
            stamps.append(frame.stamp_ns)
            poses[frame.stamp_ns] = result = estimator(image)
            latency[frame.stamp_ns] = estimator.timings.total_ms
            msg = bag_io.poses_to_person_array(result, frame.stamp_ns, frame.frame_id, skeleton)
            arrays.append((frame.log_ns, store.serialize_cdr(msg, bag_io.PERSON_ARRAY)))
        backend_name = estimator.backend
    return RunResult(stamps=stamps, poses=poses, latency_ms=latency, person_arrays=arrays,
                     skeleton=skeleton, wall_s=time.monotonic() - start, backend=backend_name,
                     invalid=invalid, duplicates=duplicates)


def _prepare_out(out, keep=()):
    """Create the output folder and remove the files an earlier run left there.

    Only the names a run writes (``bag_report.OUTPUTS``) are removed, never ``keep`` (the
    input bag and ground truth); a poses_bag/ that is not a rosbag2 stops the run.
    """
    out.mkdir(parents=True, exist_ok=True)
    bag_report.clear_outputs(out, keep=keep)


def _storage_of(reader):
    """'mcap' or 'sqlite3': the storage of the input bag, reused for poses_bag/."""
    path = pathlib.Path(reader.path)
    files = [path] if path.is_file() else list(path.iterdir())
    return 'mcap' if any(f.suffix == '.mcap' for f in files) else 'sqlite3'


if __name__ == '__main__':
    sys.exit(main())
