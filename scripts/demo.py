"""`make demo`: the whole system, offline, from a fresh clone.

1. writes a 30 Hz RGB-D demo bag of synthetic people (colour, aligned depth, camera info) with
   matching COCO ground truth (track ids, 3D keypoints),
2. starts the real pose node (lifecycle, ONNX Runtime on CPU, tracking, smoothing and depth on)
   and sends it the bag over DDS (on loopback; scripts/demo.sh sets the discovery range) twice,
   recording what it publishes: in lock-step (each frame once the previous answer is back: AP,
   IDF1 / ID switches and 3D errors over every frame, the same on a slow or a fast machine) and
   at the bag's 30 Hz (real time: drops, latency, and the AP with the dropped frames as misses,
   which depend on the machine),
3. writes the evaluation report (report.md/json, plots, predictions, PersonArray bag) and an
   annotated image strip (the node's lock-step output, track ids drawn) to demo_output/, and
   prints the headline figures (lock-step: the same on every machine), then the real-time
   timing on its own, labelled as this machine's.

Model: the bundled rtmo_ros/models/rtmo_tiny_synthetic.onnx (trained on synthetic people with
rtmo_train). Without it (or with --random-model) an RTMO-tiny with seeded random weights is
exported first: its detections are meaningless and the demo says so.
"""
import argparse
import pathlib
import sys

import cv2
import numpy as np

from rtmo_ros.engine.zoo import bundled_path

REPO = pathlib.Path(__file__).resolve().parents[1]
BUNDLED = bundled_path()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=str(REPO / 'demo_output'))
    parser.add_argument('--frames', type=int, default=150, help='frames in the demo bag')
    parser.add_argument('--seed', type=int, default=0, help='demo bag seed')
    # the bundled model saw 320x240 renders; larger frames work too (downscaled to its 320x320
    # input), but on two cores their transport and conversion make the node drop more frames
    parser.add_argument('--width', type=int, default=320, help='demo camera width [px]')
    parser.add_argument('--height', type=int, default=240, help='demo camera height [px]')
    parser.add_argument('--model', help='ONNX model (default: the bundled one)')
    parser.add_argument('--random-model', action='store_true',
                        help='use a seeded random-weight RTMO-tiny instead of the bundled model')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='speed factor of the real-time pass')
    return parser.parse_args(argv)


def random_weight_model(out_dir):
    """Export an RTMO-tiny (320x320) with seeded random weights; return its path."""
    import torch

    from rtmo_train import build_model
    from rtmo_train.export import export_onnx
    from rtmo_train.train_config import tiny_preset

    path = out_dir / 'rtmo_tiny_random_weights.onnx'
    if not path.exists():
        torch.manual_seed(0)
        model = build_model(tiny_preset().model).eval()
        export_onnx(model, path)
    return path


def choose_model(args, out):
    """(model path, label) for the demo."""
    if args.model:
        return pathlib.Path(args.model), pathlib.Path(args.model).name
    if BUNDLED.exists() and not args.random_model:
        return BUNDLED, f'{BUNDLED.name} (bundled, trained on synthetic people)'
    print('[demo] NOTE: no bundled trained model; using RANDOM WEIGHTS - detections are '
          'meaningless, the AP will be near 0. This shows the plumbing, not accuracy.')
    return random_weight_model(out), 'RTMO-tiny with seeded RANDOM weights (untrained)'


STRIP = 'annotated_strip.png'


def annotated_strip(bag, out, count=4):
    """Draw ``count`` evenly spaced frames with what the node published for them (lock-step
    PersonArrays of ``out/poses_bag``: smoothed keypoints, track ids), side by side; save a PNG.
    """
    from rtmo_ros import bag_io
    from rtmo_ros.bag_eval import POSES_TOPIC
    from rtmo_ros.bag_report import atomic_path
    from rtmo_ros.engine.draw import draw_poses
    from rtmo_ros.engine.skeleton import skeleton_for

    published = {bag_io.stamp_ns(msg.header): msg
                 for _, msg in bag_io.read_person_arrays(out / 'poses_bag', POSES_TOPIC)}
    reader = bag_io.open_bag(bag)
    try:
        topic = bag_io.choose_topic(reader, None)
        frames = [f for f in bag_io.read_frames(reader, topic) if f.stamp_ns in published]
    finally:
        reader.close()
    tiles = []
    for i in np.linspace(0, len(frames) - 1, count).round().astype(int):
        msg = published[frames[i].stamp_ns]
        k = len(msg.persons[0].keypoints) if msg.persons else 17
        tracked = bag_io.person_array_to_tracked(msg, k)
        tiles.append(draw_poses(frames[i].decode(), bag_io.person_array_to_poses(msg, k),
                                skeleton_for(k), track_ids=tracked.track_ids))
    path = out / STRIP
    with atomic_path(path) as tmp:
        ok, png = cv2.imencode('.png', np.hstack(tiles))
        if not ok:
            raise RuntimeError('OpenCV could not PNG-encode the annotated strip')
        tmp.write_bytes(png.tobytes())
    return path


def _ms(value):
    return 'n/a' if value is None else f'{value:.1f} ms'


def _m(value):
    return 'n/a' if value is None else f'{value:.3f} m'


def headline(report, label):
    """The printed summary: accuracy, tracking and 3D over every frame, in lock-step, so the
    same on every machine."""
    skipped = report['invalid'] + report['duplicate_stamps']
    idf1 = 'n/a' if report.get('idf1') is None else f"{report['idf1']:.3f}"
    valid = report.get('kpt3d_valid_fraction')
    return '\n'.join([
        '[demo] ================= headline =================',
        f'  model          {label}',
        f"  accuracy       COCO AP / AR {report['ap']:.3f} / {report['ar']:.3f} over all "
        f"{report['frames']} frames (xtcocotools, maxDets 20)",
        f"                 lock-step through the node: {report['timed_out']} of "
        f"{report['frames']} timed out" + (f', {skipped} skipped' if skipped else ''),
        f"  tracking       IDF1 {idf1}, {report.get('id_switches')} ID switches over all "
        f"{report['frames']} frames (GT track ids, box IoU >= 0.5)",
        f"  3D (depth)     keypoint error median {_m(report.get('kpt3d_err_median_m'))}, p90 "
        f"{_m(report.get('kpt3d_err_p90_m'))}; body position median "
        f"{_m(report.get('position_err_median_m'))}; "
        + ('n/a' if valid is None else f'{100 * valid:.0f} %') + ' of GT keypoints lifted'])


def timing(report, bag_hz):
    """The real-time pass, printed apart from the headline: what the node drops at the bag's
    rate and its latency depend on this machine's speed and load."""
    rt = report['realtime']
    hz = bag_hz * rt['rate']
    lat = rt['latency_ms']
    return '\n'.join([
        '[demo] ---- timing on this machine (changes with its speed and load) ----',
        f"  real time      at {hz:g} Hz: {rt['dropped']} of {rt['frames']} frames "
        f"dropped by the node (newest-frame-only), COCO AP {rt['ap']:.3f} (drops = misses)",
        f"  latency        p50 {_ms(lat['p50'])}, p95 {_ms(lat['p95'])}, max "
        f"{_ms(lat['max'])} at {hz:g} Hz (image publish -> PersonArray "
        'received)'])


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from rtmo_ros.bag_eval import evaluate_bag
    from rtmo_ros.bag_report import clear_outputs, write_json
    from rtmo_ros.demo_bag import DEPTH_TOPIC, INFO_TOPIC, RATE_HZ, write_demo_bag

    clear_outputs(out, names=(STRIP,))  # evaluate_bag removes the report files itself

    model, label = choose_model(args, out)
    print(f'[demo] model: {label}')
    bag, gt = write_demo_bag(out / 'data', frames=args.frames, seed=args.seed, force=True,
                             width=args.width, height=args.height)
    print(f'[demo] sending {args.frames} frames ({args.width}x{args.height}, with depth) to the '
          'pose node (tracking, smoothing, depth): in lock-step (accuracy), then at '
          f'{RATE_HZ:g} Hz x {args.rate:g} (real time)')
    report = evaluate_bag(bag, gt=gt, mode='online', rate=args.rate, model=str(model),
                          backend='onnxruntime', out=out, depth_topic=DEPTH_TOPIC,
                          info_topic=INFO_TOPIC)
    strip = annotated_strip(bag, out)
    report['demo_model'] = label
    report['files'] = sorted(set(report['files']) | {STRIP})
    write_json(out / 'report.json', report)
    print('\n' + headline(report, label))
    print(f'  report         {out / "report.md"}')
    print(f'  picture        {strip}')
    print(timing(report, RATE_HZ))
    return 0


if __name__ == '__main__':
    sys.exit(main())
