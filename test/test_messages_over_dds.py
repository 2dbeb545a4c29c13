"""rtmo_msgs over real DDS: every field survives, SkeletonInfo is latched for late joiners."""
import math
import time

import pytest

rclpy = pytest.importorskip('rclpy')
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from rtmo_msgs.msg import Keypoint2D, Person, PersonArray, SkeletonInfo  # noqa: E402
from rtmo_ros.engine.skeleton import COCO17  # noqa: E402


@pytest.fixture
def node():
    rclpy.init()
    n = rclpy.create_node('rtmo_msgs_test')
    yield n
    n.destroy_node()
    rclpy.shutdown()


def spin_until(node, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def make_person_array():
    msg = PersonArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    msg.header.frame_id = 'camera_optical'
    msg.skeleton = COCO17.name
    for i in range(3):
        p = Person(score=0.9 - 0.1 * i, x_min=10.0 + i, y_min=20.5, x_max=110.25, y_max=220.0,
                   track_id=-1 if i == 0 else i)
        p.keypoints = [Keypoint2D(x=float(k), y=float(2 * k + i), score=k / 17.0)
                       for k in range(COCO17.num_keypoints)]
        p.keypoints_3d = [Point(x=math.nan, y=math.nan, z=math.nan)
                          for _ in range(COCO17.num_keypoints)]
        msg.persons.append(p)
    return msg


def test_person_array_round_trips_every_field(node):
    received = []
    node.create_subscription(PersonArray, 'poses_rt', received.append, 10)
    pub = node.create_publisher(PersonArray, 'poses_rt', 10)
    sent = make_person_array()
    assert spin_until(node, lambda: pub.get_subscription_count() > 0)
    pub.publish(sent)
    assert spin_until(node, lambda: received)
    got = received[0]
    assert got.header == sent.header and got.skeleton == 'coco17'
    assert len(got.persons) == 3
    for a, b in zip(got.persons, sent.persons):
        assert (a.score, a.x_min, a.y_min, a.x_max, a.y_max, a.track_id) == pytest.approx(
            (b.score, b.x_min, b.y_min, b.x_max, b.y_max, b.track_id))
        assert [v for k in a.keypoints for v in (k.x, k.y, k.score)] == pytest.approx(
            [v for k in b.keypoints for v in (k.x, k.y, k.score)])
        assert len(a.keypoints_3d) == 17 and all(math.isnan(q.z) for q in a.keypoints_3d)


def test_skeleton_info_reaches_a_late_subscriber(node):
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(SkeletonInfo, 'skeleton_rt', latched)
    info = SkeletonInfo(skeleton=COCO17.name, keypoint_names=list(COCO17.names),
                        edges=[i for e in COCO17.edges for i in e], model='rtmo-s.onnx',
                        input_width=640, input_height=640, backend='onnxruntime',
                        precision='fp32')
    pub.publish(info)
    spin_until(node, lambda: False, timeout=0.3)  # published well before anyone listens
    received = []
    node.create_subscription(SkeletonInfo, 'skeleton_rt', received.append, latched)
    assert spin_until(node, lambda: received)
    assert received[0] == info
