"""End-to-end latency of the rtmo_pose node versus the engine's own time, on the same frames.

    python benchmarks/bench_node.py --model /path/rtmo-s.onnx [--backend onnxruntime]

Starts ``python -m rtmo_ros.pose_node`` (autostart, reliable image subscription), publishes
one frame at a time and waits for its PersonArray (latency = publish -> PersonArray received,
including DDS transport of the image, conversion, engine, messages), then runs the engine
itself (``PoseEstimator.__call__``) on the same frame in this process with the same model,
backend and thread count, alternating frame by frame so both see the same machine load.
Prints both and their ratio (target <= 1.10 on CPU), and the mean time of each stage inside
the node (its /diagnostics) beside the engine's own stages in this process. Each side gets a
0.1 s pause before the other starts: ONNX Runtime's pool threads spin for a while after a run,
and spinning threads of one process on two cores slowed the other's inference by ~15 % (the
first versions of this benchmark paused only after the node, which made the node look slow).
Then measures the transport floor: the same images published to an echo node (subscribe,
reply with the header; the same executor as the node) and the header received back, which is
what any ROS 2 node costs before it does anything, and prints it beside the ratio.
Then times the node's perception stage
(depth decoding, tracking, smoothing, 3D lifting: ``rtmo_ros.perception.PersonPipeline``) for
10 moving people with a 640x480 depth image, and prints it as a share of the engine's median
time of the same run (target <= 1 %).
Image transport uses ``config/fastdds_large_images.xml`` (the README's recommended setting
for camera drivers: a 16 MB shared-memory segment, since Fast DDS's built-in 512 KB one sends a
900 KB VGA image as fragmented UDP); ``--fastdds-profile none`` measures the built-in transports.
Run it from a shell where ``env.sh`` and ``scripts/loopback_dds.sh`` are sourced.
"""
import argparse
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def frames(count, size):
    """``count`` distinct BGR frames of (W, H) ``size``: the parity image shifted, else noise."""
    fixture = REPO.parent / 'shared' / 'parity' / 'rtmo-s_coco_seed1_io.npz'
    import cv2

    base = (np.load(fixture)['image_bgr'] if fixture.exists()
            else np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8))
    base = cv2.resize(base, size)
    return [np.roll(base, 7 * i, axis=1) for i in range(count)]


STAGES = ('wait', 'convert', 'preprocess', 'inference', 'postprocess', 'perception', 'publish',
          'total')


def engine_window(msg):
    """(frames processed, mean engine ms, *mean ms of each of STAGES) of one /diagnostics
    window of the node."""
    values = {kv.key: kv.value for kv in msg.status[0].values}
    if not all(f'{k}_ms' in values for k in STAGES):
        return (0, 0.0) + (0.0,) * len(STAGES)
    means = [float(values[f'{k}_ms']) for k in STAGES]
    return (int(values['processed_in_window']), sum(means[2:5]), *means)


def reliable():
    """The QoS of every benchmark topic: reliable, depth 10."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@contextlib.contextmanager
def image_client(name, image_topic, reply_type, reply_topic, stamp_of):
    """(node, image publisher, {stamp nanosec: perf_counter of the reply}, its Condition) of a
    client node spinning in a thread, once the publisher has a subscriber (at most 60 s)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node(name)
    arrived, news = {}, threading.Condition()

    def on_reply(msg):
        with news:
            arrived.setdefault(stamp_of(msg).nanosec, time.perf_counter())
            news.notify()

    node.create_subscription(reply_type, reply_topic, on_reply, reliable())
    pub = node.create_publisher(Image, image_topic, reliable())
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield node, pub, arrived, news
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def stop(proc):
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)


def measure(args, images, engine):
    """Return (node seconds, engine seconds) per image, interleaved frame by frame.

    Node: publish -> PersonArray received. Engine: ``engine(image)`` in this process while the
    node is idle. Interleaving puts both under the same machine load.
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Header

    from rtmo_msgs.msg import PersonArray
    from rtmo_ros.image_conversion import bgr_to_image

    cmd = [sys.executable, '-m', 'rtmo_ros.pose_node', '--ros-args', '-p', f'model:={args.model}',
           '-p', f'backend:={args.backend}', '-p', 'autostart:=true',
           '-p', f'num_threads:={args.threads}', '-p', 'qos_reliability:=reliable']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with image_client('bench_node_client', 'image', PersonArray, 'poses',
                          lambda m: m.header.stamp) as (node, pub, arrived, news):
            windows = []  # (frames, mean engine ms inside the node) per diagnostics window
            node.create_subscription(DiagnosticArray, '/diagnostics',
                                     lambda m: windows.append(engine_window(m)),
                                     reliable())
            messages = [bgr_to_image(img, Header(frame_id='bench')) for img in images]
            node_s, engine_s, stages = [], [], []
            for i, msg in enumerate(messages[:args.warmup] + messages):
                msg.header.stamp.nanosec = i + 1
                sent = time.perf_counter()
                pub.publish(msg)
                with news:  # a blocking wait: polling here would take CPU from the node
                    news.wait_for(lambda n=i + 1: n in arrived)
                node_s.append(arrived[i + 1] - sent)
                time.sleep(0.1)  # let the node finish (markers) and its ORT threads stop spinning
                t0 = time.perf_counter()
                engine(images[(i - args.warmup) % len(images)])
                engine_s.append(time.perf_counter() - t0)
                stages.append(engine.timings)
                time.sleep(0.1)  # the same pause for this process's ORT threads before the node
            time.sleep(1.5)  # the last diagnostics window
            return (np.array(node_s[args.warmup:]), np.array(engine_s[args.warmup:]),
                    np.array([w for w in windows if w[0] > 0]), stages[args.warmup:])
    finally:
        stop(proc)


def echo_node():
    """``--echo``: a node that answers every Image on ``echo_in`` with its header on
    ``echo_out`` (the transport floor: what any ROS 2 node pays to get the image and reply)."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    rclpy.init()
    node = rclpy.create_node('bench_node_echo')
    pub = node.create_publisher(Header, 'echo_out', reliable())
    node.create_subscription(Image, 'echo_in', lambda m: pub.publish(m.header),
                             reliable())
    executor = MultiThreadedExecutor(num_threads=3)  # as the pose node
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass


def transport_ms(images, repeats=25):
    """Median ms of publish image -> echo node -> header received, with the frames above."""
    from std_msgs.msg import Header

    from rtmo_ros.image_conversion import bgr_to_image

    proc = subprocess.Popen([sys.executable, __file__, '--echo'], cwd=REPO)
    try:
        with image_client('bench_node_transport', 'echo_in', Header, 'echo_out',
                          lambda m: m.stamp) as (_, pub, arrived, news):
            time.sleep(0.5)
            rtt = []
            for i in range(repeats + 3):
                msg = bgr_to_image(images[i % len(images)], Header(frame_id='bench'))
                msg.header.stamp.nanosec = i + 1
                sent = time.perf_counter()
                pub.publish(msg)
                with news:
                    news.wait_for(lambda n=i + 1: n in arrived, 10.0)
                rtt.append(arrived[i + 1] - sent)
                time.sleep(0.05)
            return 1e3 * float(np.median(rtt[3:]))
    finally:
        stop(proc)


def perception_ms(repeats=300, people=10, size=(640, 480)):
    """Median ms of the node's perception stage for ``people`` walkers with depth."""
    from sensor_msgs.msg import Image

    from rtmo_ros.engine.poses import Poses
    from rtmo_ros.image_conversion import depth_to_metres
    from rtmo_ros.perception import PersonPipeline, PinholeCamera

    w, h = size
    rng = np.random.default_rng(0)
    boxes = np.stack([np.linspace(10, w - 70, people), np.full(people, 100.0)], 1)
    boxes = np.concatenate([boxes, boxes + [60, 200]], 1).astype(np.float32)
    pose = rng.uniform(0, 1, (people, 17, 2)) * [60, 200]
    depth = Image(width=w, height=h, encoding='16UC1', step=2 * w,
                  data=rng.integers(1500, 5000, (h, w), np.uint16).tobytes())
    f = 0.9 * w
    camera = PinholeCamera.from_fields(w, h, [f, 0, w / 2, 0, f, h / 2, 0, 0, 1], [0.0] * 5,
                                       [f, 0, w / 2, 0, 0, f, h / 2, 0, 0, 0, 1, 0])
    pipeline, times = PersonPipeline(), []
    for i in range(repeats):
        shift = np.float32(2.0 * i % 200)
        poses = Poses(boxes + [shift, 0, shift, 0], np.full(people, 0.9, np.float32),
                      (boxes[:, None, :2] + pose + [shift, 0]).astype(np.float32),
                      np.full((people, 17), 0.9, np.float32))
        t0 = time.perf_counter()
        pipeline.update(poses, i / 30.0, depth_to_metres(depth), camera)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times[10:]))


PROFILE = REPO / 'config' / 'fastdds_large_images.xml'


def use_profile(path):
    """Give every participant of this run (this process and its children) the Fast DDS
    profile ``path``, or the built-in transports for 'none'; read when rclpy starts."""
    for var in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'):
        os.environ.pop(var, None)
        if path != 'none':
            os.environ[var] = str(pathlib.Path(path).resolve())
    print('Fast DDS transports: ' + ('built-in (512 KB shared-memory segment)' if path == 'none'
                                    else f'profile {path}'), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=str(REPO.parent / 'shared' / 'parity' /
                                               'rtmo-s_coco_seed1_mmdeploy.onnx'))
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--frames', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--fastdds-profile', default=str(PROFILE),
                        help='Fast DDS XML profile of this process (the image publisher), the '
                        'node and the echo node; "none": Fast DDS built-in transports '
                        '(default: %(default)s)')
    parser.add_argument('--echo', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        return echo_node()
    use_profile(args.fastdds_profile)
    from rtmo_ros.engine import PoseEstimator

    images = frames(args.frames, (args.width, args.height))
    with PoseEstimator(args.model, backend=args.backend, num_threads=args.threads) as engine:
        node, engine, windows, stages = measure(args, images, engine)
    for name, t in (('node end-to-end', node), ('engine', engine)):
        print(f'{name:16s} median {1e3 * np.median(t):7.1f} ms  mean {1e3 * t.mean():7.1f} ms'
              f'  p90 {1e3 * np.percentile(t, 90):7.1f} ms  (n={len(t)})')
    print(f'node/engine ratio (median): {np.median(node) / np.median(engine):.3f}  '
          f'(mean: {node.mean() / engine.mean():.3f}; target <= 1.10)')
    floor = transport_ms(images)
    engine_ms = 1e3 * np.median(engine)
    print(f'transport floor (the same images to an echo node and a header back): median '
          f'{floor:.1f} ms = {floor / engine_ms:.3f} of the engine median; node end-to-end '
          f'minus that floor / engine: {(1e3 * np.median(node) - floor) / engine_ms:.3f}')
    perception = perception_ms()
    print(f'perception stage (10 people, 640x480 depth: decode + track + smooth + lift) median '
          f'{perception:.2f} ms = {100 * perception / (1e3 * np.median(engine)):.2f} % of the '
          'engine median (target <= 1 %)')
    if len(windows):  # includes warm-up frames: a cross-check, not the headline
        inside = (windows[:, 0] * windows[:, 1]).sum() / windows[:, 0].sum() / 1e3
        print(f'engine inside the node (its /diagnostics stage times) mean {1e3 * inside:.1f} ms;'
              f' node end-to-end / that: {node.mean() / inside:.3f}')
        weights = windows[:, 0] / windows[:, 0].sum()
        node_means = {k: float(weights @ windows[:, 2 + j]) for j, k in enumerate(STAGES)}
        print('stage means [ms], node (windows) | engine in this process: ' + ', '.join(
            f'{k} {v:.1f}' for k, v in node_means.items()) + ' | ' + ', '.join(
            f'{k} {np.mean([getattr(t, k + "_ms") for t in stages]):.1f}'
            for k in ('preprocess', 'inference', 'postprocess')))


if __name__ == '__main__':
    main()
