"""rtmo-bag-eval: replay a rosbag2 image topic through RTMO; report AP, drops and latency.

``offline`` runs the engine and the node's person pipeline (tracking, smoothing, depth lifting:
``rtmo_ros.perception.PersonPipeline`` with the node's defaults) on every frame in this process
(accuracy of the model, engine time). ``online`` starts a real ``rtmo_pose`` node and sends it
the frames (and their depth images and camera info) over DDS twice: in lock-step (each frame
once the previous answer is back: the AP over every frame, the same on any machine) and at the
recorded pace times ``--rate`` (``realtime`` in the report: frames dropped, end-to-end latency,
the AP with drops as misses). See ``rtmo_ros.bag_report`` for the ground-truth stamp
convention and the report's contents.
"""
import argparse
from dataclasses import fields
import pathlib
import sys
import time

from tqdm import tqdm

from rtmo_ros import bag_io, bag_report
from rtmo_ros.bag_io import BagError
from rtmo_ros.bag_replay import FRAME_TIMEOUT_S, replay_online
from rtmo_ros.bag_report import RunResult
from rtmo_ros.engine.backends.select import BACKENDS
from rtmo_ros.engine.estimator import PRECISIONS
from rtmo_ros.image_conversion import ImageError
from rtmo_ros.node_params import NodeParams, problems

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
    parser.add_argument('--backend', default='auto', choices=BACKENDS)
    parser.add_argument('--precision', default='auto', choices=('auto',) + PRECISIONS,
                        help='as the node parameter: int8 = a calibrated int8 graph on ONNX '
                             'Runtime (CPU), made and cached on first use; bf16 = OpenVINO on '
                             'a CPU with native bf16')
    parser.add_argument('--score-thr', type=float, default=0.1,
                        help='minimum instance score of a kept person (the node default)')
    parser.add_argument('--depth-topic',
                        help='aligned depth image topic (16UC1 mm / 32FC1 m); with '
                             '--camera-info-topic: 3D keypoints, position and velocity')
    parser.add_argument('--camera-info-topic', help='CameraInfo topic of the colour image')
    parser.add_argument('--no-tracking', action='store_true',
                        help='no track ids (and so no smoothing), as the node with '
                             'tracking:=false')
    parser.add_argument('--no-smoothing', action='store_true',
                        help='raw keypoints, as the node with smoothing:=false')
    parser.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                        help='pose node parameter (repeatable): passed to the node online; '
                             'offline the tracking, smoothing and depth ones apply in-process')
    parser.add_argument('--out', default='bag_eval', help='output folder')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = evaluate_bag(args.bag, gt=args.gt, topic=args.topic, mode=args.mode,
                              rate=args.rate, model=args.model, backend=args.backend,
                              out=args.out, score_thr=args.score_thr,
                              node_params=[*args.node_param, f'precision:={args.precision}'],
                              progress=not args.quiet,
                              frame_timeout=args.frame_timeout, depth_topic=args.depth_topic,
                              info_topic=args.camera_info_topic,
                              tracking=not args.no_tracking, smoothing=not args.no_smoothing)
    except (BagError, FileNotFoundError, ValueError) as exc:
        print(f'rtmo-bag-eval: error: {exc}', file=sys.stderr)
        return 2
    print(headline(report) + f" -> {pathlib.Path(args.out) / 'report.md'}")
    return 0


def _num(value, digits=3):
    return 'n/a' if value is None else f'{value:.{digits}f}'


def headline(report):
    """One line: frames, AP (IDF1, 3D error) over every frame and, online, the real time."""
    skipped = f", {report['invalid']} undecodable skipped" if report.get('invalid') else ''
    realtime = report.get('realtime')
    if realtime is None:
        lat = report['latency_ms']
        return (f"{report['frames']} frames{skipped}, {report['dropped']} dropped, AP "
                f"{_num(report['ap'])}{_track_figures(report)}, latency p50 "
                f"{_num(lat['p50'], 1)} ms p95 {_num(lat['p95'], 1)} ms")
    lat = realtime['latency_ms']
    return (f"{report['frames']} frames{skipped}; every frame (lock-step): AP "
            f"{_num(report['ap'])}{_track_figures(report)}, {report['timed_out']} timed out; "
            f"real time x{realtime['rate']:g}: {realtime['dropped']} dropped, AP "
            f"{_num(realtime['ap'])}, latency p50 {_num(lat['p50'], 1)} ms p95 "
            f"{_num(lat['p95'], 1)} ms")


def _track_figures(report):
    """', IDF1 0.950, 1 ID switch, 3D median 0.031 m' as far as the report has them."""
    text = ''
    if report.get('idf1') is not None:
        switches = report['id_switches']
        text += (f", IDF1 {_num(report['idf1'])}, {switches} ID switch"
                 + ('' if switches == 1 else 'es'))
    if report.get('kpt3d_err_median_m') is not None:
        text += f", 3D median {_num(report['kpt3d_err_median_m'])} m"
    return text


def evaluate_bag(bag, gt=None, topic=None, mode='offline', rate=1.0, model=None,
                 backend='auto', out='bag_eval', score_thr=0.1, node_params=(),
                 progress=True, frame_timeout=FRAME_TIMEOUT_S, depth_topic=None,
                 info_topic=None, tracking=True, smoothing=True):
    """Replay ``bag`` (offline or online), evaluate against ``gt``, write the report to ``out``.

    Returns the report.json dict. Everything that can be checked cheaply (bag, topics, GT
    stamps, parameters, output folder) is checked before the run starts; then the files of an
    earlier run in ``out`` are removed. Online, the top-level figures (``ap``, ``idf1``, 3D
    errors, ``predictions.json``) come from the lock-step pass over every frame, ``realtime``
    from the pass at the bag's rate. Tracking and smoothing are on by default, as in the node;
    depth (3D keypoints, position, velocity) when ``depth_topic`` and ``info_topic`` are given.
    """
    if mode not in ('offline', 'online'):
        raise ValueError(f'mode must be offline or online, got {mode!r}')
    if mode == 'online' and not (rate > 0 and frame_timeout > 0):
        raise BagError(f'--rate (a speed multiplier, got {rate}) and --frame-timeout (s, got '
                       f'{frame_timeout}) must be > 0')
    if bool(depth_topic) != bool(info_topic):
        raise BagError('--depth-topic and --camera-info-topic go together (3D needs the depth '
                       'image and the intrinsics of the colour image); give both or neither')
    settings = node_settings(node_params, tracking, smoothing, depth=bool(depth_topic))
    out = pathlib.Path(out)
    gt_all = bag_report.load_gt(gt) if gt else None
    reader = bag_io.open_bag(bag)
    try:
        topic = bag_io.choose_topic(reader, topic)
        check_depth_topics(reader, depth_topic, info_topic)
        if gt_all is not None:  # fail now, not after the replay, when no stamp matches
            bag_report.match_gt(gt_all, bag_io.read_stamps(reader, topic), f'topic {topic}')
        _prepare_out(out, keep=[bag] + ([gt] if gt else []))
        realtime = None
        if mode == 'offline':
            result = run_offline(reader, topic, model, backend, score_thr, progress, settings,
                                 depth_topic, info_topic)
        else:
            result, realtime = replay_online(
                reader, topic, model, backend, rate, out / 'node.log', score_thr,
                [*node_params, *switches(tracking, smoothing, bool(depth_topic))], progress,
                frame_timeout, depth_topic=depth_topic, info_topic=info_topic,
                sync_tolerance_ns=_tolerance_ns(settings))
        storage = _storage_of(reader)
    finally:
        reader.close()
    meta = {'bag': str(bag), 'topic': topic, 'mode': mode,
            'rate': rate if mode == 'online' else None, 'model': str(model),
            'backend': backend, 'score_thr': score_thr, 'gt': str(gt) if gt else None,
            'tracking': settings.tracking, 'smoothing': settings.tracking and settings.smoothing,
            'depth': settings.use_depth, 'depth_topic': depth_topic,
            'camera_info_topic': info_topic}
    if mode == 'online':
        meta['frame_timeout_s'] = frame_timeout
    return bag_report.write_report(out, result, gt_all, meta, storage=storage,
                                   poses_topic=POSES_TOPIC, realtime=realtime,
                                   realtime_topic=REALTIME_TOPIC)


def switches(tracking, smoothing, depth):
    """Node parameters (``name:=value``) for the flags that differ from the node's defaults."""
    return ((['tracking:=false'] if not tracking else [])
            + (['smoothing:=false'] if not smoothing else [])
            + (['use_depth:=true'] if depth else []))


def node_settings(node_params=(), tracking=True, smoothing=True, depth=False):
    """The node's :class:`NodeParams` for this run: defaults, ``--node-param`` items, flags.

    Offline, the pipeline is built from it (``NodeParams.perception()``, as the node builds
    its own), so both modes run the same tracking, smoothing and depth settings. Items naming
    no node parameter are left to the node; a value of the wrong type or out of range raises
    BagError.
    """
    import yaml

    types = {f.name: type(f.default) for f in fields(NodeParams)}
    changes = {}
    for item in node_params:
        name, sep, text = item.partition(':=')
        name = name.strip()
        if not sep or name not in types:
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if types[name] is float and type(value) is int:
            value = float(value)
        if type(value) is not types[name]:
            raise BagError(f'--node-param {item}: {name} takes a {types[name].__name__}, got '
                           f'{text!r}')
        changes[name] = value
    settings = NodeParams().updated(changes)
    settings = settings.updated({'tracking': settings.tracking and tracking,
                                 'smoothing': settings.smoothing and smoothing,
                                 'use_depth': depth})
    reasons = problems(settings)
    if reasons:
        raise BagError('; '.join(reasons))
    return settings


def _tolerance_ns(settings):
    return int(settings.depth_sync_tolerance_s * 1e9)  # as the node converts it


def check_depth_topics(reader, depth_topic, info_topic):
    """Raise BagError unless the bag has these topics as Image and CameraInfo (when given)."""
    topics = {c.topic: c.msgtype for c in reader.connections}
    for name, topic, msgtype in (('--depth-topic', depth_topic, bag_io.IMAGE),
                                 ('--camera-info-topic', info_topic, bag_io.CAMERA_INFO)):
        if not topic:
            continue
        if topics.get(topic) != msgtype:
            listing = ', '.join(f'{t} ({m.rsplit("/", 1)[-1]})' for t, m in sorted(topics.items()))
            what = 'has no topic' if topic not in topics else f'has a {topics[topic]} on'
            raise BagError(f'bag {reader.path} {what} {topic} for {name}, which needs a '
                           f'{msgtype} topic (topics: {listing or "none"})')


def run_offline(reader, topic, model, backend='auto', score_thr=0.1, progress=True,
                settings=None, depth_topic=None, info_topic=None):
    """Run the engine and the node's person pipeline on every frame; return a RunResult.

    As in the node: an undecodable image is skipped (counted in ``invalid``), a header stamp
    seen before is not run again (counted in ``duplicates``); ``settings`` (:class:`NodeParams`,
    default the node's defaults) give the tracking, smoothing and depth settings; the depth
    image nearest in stamp (within ``depth_sync_tolerance_s``) of the same frame id and size,
    with the latest camera info of that frame and size, gives the 3D. The published
    (smoothed) keypoints are the ones evaluated and written to ``poses_bag``.
    """
    from rtmo_ros.engine import PoseEstimator
    from rtmo_ros.engine.poses import Poses
    from rtmo_ros.perception import PersonPipeline
    from rtmo_ros.perception.camera import CameraInfos

    settings = settings or node_settings()
    store = bag_io.typestore()
    pipeline = PersonPipeline(settings.perception())
    poses, tracks, latency, arrays, stamps, invalid = {}, {}, {}, [], [], []
    duplicates = depth_frames = 0
    cameras = CameraInfos(settings.image_rectified)
    total = bag_io.count_messages(reader, topic)
    start = time.monotonic()
    precision = 'fp16' if settings.precision == 'auto' else settings.precision  # as the node
    with PoseEstimator(model, backend=backend, score_thr=score_thr, precision=precision,
                       ort_provider=settings.ort_provider) as estimator:
        skeleton = estimator.skeleton.name
        for synced in tqdm(_synced_frames(reader, topic, depth_topic, info_topic, settings),
                           total=total, unit='frame', desc='offline', disable=not progress):
            frame = synced.frame
            try:
                image = frame.decode(settings.max_image_pixels)
            except ImageError:
                invalid.append(frame.stamp_ns)
                continue
            if frame.stamp_ns in poses:
                duplicates += 1
                continue
            stamps.append(frame.stamp_ns)
            result = estimator(image)
            latency[frame.stamp_ns] = estimator.timings.total_ms
            camera = _camera_for(cameras, synced, image.shape)
            depth_m = _depth_for(synced, image.shape) if camera is not None else None
            depth_frames += depth_m is not None
            tracked = pipeline.update(result, frame.stamp_ns * 1e-9, depth_m, camera)
            tracks[frame.stamp_ns] = tracked
            poses[frame.stamp_ns] = Poses(result.boxes, result.scores, tracked.keypoints,
                                          result.keypoint_scores)
            msg = bag_io.poses_to_person_array(result, frame.stamp_ns, frame.frame_id, skeleton,
                                               tracked)
            arrays.append((frame.log_ns, store.serialize_cdr(msg, bag_io.PERSON_ARRAY)))
        backend_name = estimator.backend
    return RunResult(stamps=stamps, poses=poses, latency_ms=latency, person_arrays=arrays,
                     skeleton=skeleton, wall_s=time.monotonic() - start, backend=backend_name,
                     invalid=invalid, duplicates=duplicates, tracks=tracks,
                     depth_frames=depth_frames if depth_topic else None)


def _synced_frames(reader, topic, depth_topic, info_topic, settings):
    """SyncedFrames of ``topic`` (depth decoded as the node decodes it), or bare frames."""
    if not depth_topic:
        return (bag_io.SyncedFrame(f) for f in bag_io.read_frames(reader, topic))
    return bag_io.read_synced(reader, topic, depth_topic, info_topic, _tolerance_ns(settings),
                              max_pixels=settings.max_image_pixels)


def _camera_for(cameras, synced, shape):
    """The node's camera choice (perception.camera.CameraInfos) for the image of ``synced``."""
    if synced.camera_info is not None:
        cameras.add(synced.camera_info)
    try:
        return cameras.camera_for(synced.frame.frame_id, shape[1], shape[0])
    except ValueError:  # refused by the node as well: no 3D for this frame
        return None


def _depth_for(synced, shape):
    """The paired depth [m] when it has the image's frame id and size (the node's rule)."""
    depth = synced.depth_m
    if depth is None or depth.shape != tuple(shape[:2]):
        return None
    return depth if synced.depth_frame_id == synced.frame.frame_id else None


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
