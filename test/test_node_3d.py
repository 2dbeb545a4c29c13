"""The node over real DDS with aligned depth and camera_info: track ids and 3D against the truth.

A test publisher plays the scripted depth scene (rtmo_train.data.synthetic.render_depth_sequence:
people at known distances crossing in front of a wall) into a node process, lock-step (the next
frame goes out when the previous PersonArray is back), depth and camera_info first, as cameras
publish them. The bundled model runs on ONNX Runtime; tracking and smoothing are the defaults.
"""
import math
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from rtmo_msgs.msg import PersonArray  # noqa: E402
from rtmo_ros.engine.zoo import bundled_path  # noqa: E402
from rtmo_ros.image_conversion import bgr_to_image  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
WIDTH, HEIGHT, FRAMES = 320, 240, 60
FRAME = 'camera_optical'


def header(index):
    h = Header(frame_id=FRAME)
    h.stamp.sec, h.stamp.nanosec = 100 + index // 30, (index % 30) * 33_333_333
    return h


def depth_msg(depth_m, hdr):
    mm = np.round(depth_m * 1000).astype(np.uint16)
    return Image(header=hdr, height=HEIGHT, width=WIDTH, encoding='16UC1', is_bigendian=0,
                 step=2 * WIDTH, data=mm.tobytes())


def info_msg(K, hdr):
    k = [float(v) for v in K.ravel()]
    p = [k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
    return CameraInfo(header=hdr, height=HEIGHT, width=WIDTH, distortion_model='plumb_bob',
                      d=[0.0] * 5, k=k, p=p, r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])


@pytest.fixture(scope='module')
def played(tmp_path_factory):
    """Play the scene into a node with use_depth; return [(truth persons, PersonArray)]."""
    from rtmo_train.data.synthetic import render_depth_sequence, scene_camera_matrix

    ns = f'/depth3d_{os.getpid()}'
    log_path = tmp_path_factory.mktemp('node3d') / 'node.log'
    log = open(log_path, 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'rtmo_ros.pose_node', '--ros-args', '-r', f'__ns:={ns}',
         '-p', f'model:={bundled_path()}', '-p', 'backend:=onnxruntime', '-p',
         'num_threads:=2', '-p', 'autostart:=true', '-p', 'use_depth:=true'],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED='1'))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('player', namespace=ns, context=context)
    answers = {}
    node.create_subscription(PersonArray, 'poses',
                             lambda m: answers.setdefault(m.header.stamp.nanosec
                                                          + 10**9 * m.header.stamp.sec, m),
                             RELIABLE)
    pubs = {name: node.create_publisher(t, name, RELIABLE)
            for name, t in (('image', Image), ('depth', Image), ('camera_info', CameraInfo))}
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    K = scene_camera_matrix(WIDTH, HEIGHT)
    out = []
    try:
        deadline = time.monotonic() + 60
        # qos_reliability auto: wait until the node follows our reliable publishers (large
        # best-effort images can be lost between processes)
        while not all(reliable(node, f'{ns}/{name}') for name in pubs):
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
        for index, (image, depth, persons) in enumerate(
                render_depth_sequence(4, FRAMES, WIDTH, HEIGHT)):
            hdr = header(index)
            pubs['camera_info'].publish(info_msg(K, hdr))
            pubs['depth'].publish(depth_msg(depth, hdr))
            pubs['image'].publish(bgr_to_image(image, hdr))
            stamp = hdr.stamp.sec * 10**9 + hdr.stamp.nanosec
            deadline = time.monotonic() + 15
            while stamp not in answers:
                assert time.monotonic() < deadline, f'frame {index}: {log_path.read_text()}'
                time.sleep(0.005)
            out.append((persons, answers[stamp]))
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        log.close()
    return out


def reliable(node, topic):
    infos = node.get_subscriptions_info_by_topic(topic)
    return bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                               for i in infos)


def iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matches(played):
    """(frame, truth person, published person) for every truth matched at IoU >= 0.5."""
    for frame, (truth, msg) in enumerate(played):
        for person in truth:
            x, y, w, h = person['bbox']
            box = (x, y, x + w, y + h)
            best = max(msg.persons, default=None,
                       key=lambda p: iou(box, (p.x_min, p.y_min, p.x_max, p.y_max)))
            if best is not None and iou(box, (best.x_min, best.y_min, best.x_max,
                                               best.y_max)) >= 0.5:
                yield frame, person, best


def test_each_walker_keeps_one_track_id(played):
    ids = {}
    for _, person, got in matches(played):
        if got.track_id >= 0:
            ids.setdefault(person['track_id'], []).append(got.track_id)
    assert len(ids) >= 2
    for walker, seen in ids.items():
        main = max(set(seen), key=seen.count)
        assert seen.count(main) >= 0.9 * len(seen), (walker, {k: str(v) for k, v in ids.items()})
    mains = [max(set(s), key=s.count) for s in ids.values()]
    assert len(set(mains)) == len(mains), 'two walkers share an id'


def test_positions_match_the_scene_within_centimetres(played):
    errors = []
    for _, person, got in matches(played):
        p = got.position
        if math.isfinite(p.z):
            errors.append(abs(p.z - person['depth']))
    assert len(errors) > 40
    # flat cut-outs: the torso's front surface is the walker's z; smoothing lags a little
    assert np.median(errors) < 0.05 and np.percentile(errors, 90) < 0.25, np.percentile(
        errors, [50, 90])


def test_keypoints_3d_lie_on_the_rays_of_the_published_keypoints(played):
    from rtmo_train.data.synthetic import scene_camera_matrix

    K = scene_camera_matrix(WIDTH, HEIGHT)
    checked = 0
    for _, msg in played:
        for person in msg.persons:
            for kp, p3 in zip(person.keypoints, person.keypoints_3d):
                if math.isfinite(p3.z):
                    u = K[0, 0] * p3.x / p3.z + K[0, 2]
                    v = K[1, 1] * p3.y / p3.z + K[1, 2]
                    assert abs(u - kp.x) < 1e-2 and abs(v - kp.y) < 1e-2
                    checked += 1
    assert checked > 500


def test_walker_speed_is_measured(played):
    # walker 0 walks at 1.2 m/s along x (the scene's script): the velocity follows it
    speeds = [got.velocity.x for frame, person, got in matches(played)
              if person['track_id'] == 0 and frame > 15 and math.isfinite(got.velocity.x)]
    assert len(speeds) > 10 and abs(np.median(speeds) - 1.2) < 0.3, speeds
