"""Several cameras on one node: one engine call for the newest frame of each, per-camera output.

A real in-process node (MultiThreadedExecutor, as ``main`` runs it) with ``cameras:=[...]``
and the bundled model on ONNX Runtime; a peer node in the same context publishes each camera's
images and reads its poses and ``/diagnostics`` over DDS. The backend's real ``infer`` is
wrapped only to record the batch of each call and, in one test, to hold the first call until
the other cameras' frames have arrived, so that the next call must carry all of them.
"""
import itertools
import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from waiting import wait_for  # noqa: E402

from rtmo_msgs.msg import PersonArray  # noqa: E402
from rtmo_ros import node_params  # noqa: E402
from rtmo_ros.engine import PoseEstimator  # noqa: E402
from rtmo_ros.engine.zoo import bundled_path  # noqa: E402
from rtmo_ros.image_conversion import bgr_to_image  # noqa: E402
from rtmo_ros.pose_node import PoseNode  # noqa: E402

OK = TransitionCallbackReturn.SUCCESS
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
CAMERAS = ['cam0', 'cam1', 'front/left']
_names = itertools.count()


def frames(count):
    from rtmo_train.data.synthetic import render_sequence

    return [next(render_sequence(seed, 1, 320, 240))[0] for seed in range(3, 3 + count)]


class Cameras:
    """A context, an executor thread and a peer with a publisher / reader per camera."""

    def __init__(self, names, **params):
        self.ns = f'/cams_{os.getpid()}_{next(_names)}'
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.peer = rclpy.create_node('peer', namespace=self.ns, context=self.context)
        self.diags, self.poses, self.images = [], {}, {}
        self.peer.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        for name in names:
            self.poses[name] = []
            self.peer.create_subscription(PersonArray, f'{name}/poses',
                                          self.poses[name].append, RELIABLE)
            self.images[name] = self.peer.create_publisher(Image, f'{name}/image', RELIABLE)
        params = {'model': str(bundled_path()), 'backend': 'onnxruntime', 'num_threads': 1,
                  'diagnostics_period': 0.2, 'cameras': names, **params}
        self.node = PoseNode(context=self.context, namespace=self.ns, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.executor.add_node(self.peer)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diag(self, msg):
        self.diags.extend(s for s in msg.status if s.name.startswith(self.ns + '/'))

    def activate(self):
        assert self.node.trigger_configure() == OK and self.node.trigger_activate() == OK
        assert wait_for(lambda: all(p.get_subscription_count() > 0
                                    for p in self.images.values()))

    def send(self, name, image, nanosec):
        header = Header(frame_id=name.replace('/', '_') + '_optical')
        header.stamp.sec, header.stamp.nanosec = 1, nanosec
        self.images[name].publish(bgr_to_image(image, header))

    def spy(self, gate=None):
        """Record the batch of every real ``infer`` call; hold the first one until ``gate``."""
        backend = self.node.engine._backend
        real, batches = backend.infer, []

        def infer(inputs):
            batches.append(len(inputs))
            if gate is not None and len(batches) == 1:
                gate.wait(10.0)
            return real(inputs)

        backend.infer = infer
        return batches

    def close(self):
        self.executor.shutdown()
        if self.node.engine is not None:
            self.node.release()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def cameras():
    made = []

    def make(names=CAMERAS, **params):
        made.append(Cameras(names, **params))
        return made[-1]

    yield make
    for c in made:
        c.close()


def received(node, name):
    return node.streams[name].stats.totals['received']


def test_the_newest_frame_of_every_camera_goes_through_one_engine_call(cameras):
    cams = cameras()
    cams.activate()
    assert cams.node.engine.max_batch is None  # the bundled graph takes any batch
    gate = threading.Event()
    batches = cams.spy(gate)
    images = frames(len(CAMERAS))
    cams.send('cam0', images[0], 1)
    assert wait_for(lambda: batches == [1])  # the worker is inside the first call, held
    for i, name in enumerate(CAMERAS):
        cams.send(name, images[i], 2)
    assert wait_for(lambda: all(received(cams.node, n) == (2 if n == 'cam0' else 1)
                                for n in CAMERAS))
    gate.set()
    assert wait_for(lambda: all(len(cams.poses[n]) == (2 if n == 'cam0' else 1)
                                for n in CAMERAS), 20.0)
    assert batches == [1, 3]
    with PoseEstimator(bundled_path(), backend='onnxruntime', num_threads=1) as alone:
        for i, name in enumerate(CAMERAS):
            msg = cams.poses[name][-1]
            assert msg.header.frame_id == name.replace('/', '_') + '_optical'
            assert msg.header.stamp.nanosec == 2
            expected = alone(images[i])
            assert len(msg.persons) == len(expected) > 0
            got = np.array([[(k.x, k.y) for k in p.keypoints] for p in msg.persons])
            order = np.argsort([-p.score for p in msg.persons])
            raw = np.array(expected.keypoints)[np.argsort(-np.array(expected.scores))]
            # tracking smooths from the second frame on; the first frame is the raw output
            if name != 'cam0':
                assert np.abs(got[order] - raw).max() < 0.01


def test_each_camera_tracks_and_counts_on_its_own(cameras):
    cams = cameras(['cam0', 'cam1'])
    cams.activate()
    image, other = frames(2)
    for step in range(3):
        cams.send('cam0', image, 10 + step)
        assert wait_for(lambda s=step: len(cams.poses['cam0']) == s + 1, 10.0)
    cam0_ids = {p.track_id for p in cams.poses['cam0'][-1].persons} - {-1}
    assert cam0_ids == {p.track_id for p in cams.poses['cam0'][0].persons} - {-1}
    cams.send('cam1', other, 13)  # other people, later: a shared tracker would number on
    assert wait_for(lambda: len(cams.poses['cam1']) == 1, 10.0)
    cam1_ids = {p.track_id for p in cams.poses['cam1'][0].persons} - {-1}
    assert cam1_ids and min(cam1_ids) == 0 and min(cam0_ids) == 0  # both trackers start at 0
    statuses = {}
    deadline = time.monotonic() + 5.0
    while len(statuses) < 2 and time.monotonic() < deadline:
        for status in list(cams.diags):
            values = {kv.key: kv.value for kv in status.values}
            if values.get('received_total') in ('3', '1') and 'camera' in values:
                statuses[values['camera']] = values
        time.sleep(0.05)
    assert statuses['cam0']['received_total'] == '3'
    assert statuses['cam1']['received_total'] == '1'
    assert statuses['cam1']['image_topic'] == f'{cams.ns}/cam1/image'


def test_a_fixed_batch_graph_serves_the_cameras_one_call_each_and_says_so(cameras, tmp_path):
    from rtmo_train.config import ModelConfig
    from rtmo_train.export import export_onnx
    from rtmo_train.model.rtmo import build_model

    fixed = tmp_path / 'fixed.onnx'
    export_onnx(build_model(ModelConfig('tiny', deepen=0.33, widen=0.25,
                                        input_size=(128, 128), neck_channels=16)).eval(),
                fixed)
    cams = cameras(['cam0', 'cam1'], model=str(fixed))
    cams.activate()
    assert cams.node.engine.max_batch == 1
    assert '2 engine calls per frame' in cams.node._batching()
    gate = threading.Event()
    batches = cams.spy(gate)
    image = frames(1)[0]
    cams.send('cam0', image, 1)
    assert wait_for(lambda: batches == [1])
    cams.send('cam0', image, 2)
    cams.send('cam1', image, 2)
    assert wait_for(lambda: received(cams.node, 'cam1') == 1)
    gate.set()
    assert wait_for(lambda: len(cams.poses['cam0']) == 2 and len(cams.poses['cam1']) == 1,
                    20.0)
    assert batches == [1, 1, 1]


@pytest.mark.parametrize('value, words', [
    (['0cam'], 'not valid names'), (['cam0', 'cam0'], 'listed twice'),
    (['cam 1'], 'not valid names'), ([3], 'list of names')])
def test_bad_camera_names_are_refused_naming_the_rule(value, words):
    assert words in node_params.check('cameras', value)


def test_camera_lists_arrive_in_every_form_ros_gives_them():
    assert node_params.camera_list(None) == []  # YAML []: the parameter stays unset
    assert node_params.camera_list('') == []
    assert node_params.camera_list('cam0, cam1') == ['cam0', 'cam1']
    assert node_params.camera_list(['a', 'b/c']) == ['a', 'b/c']
    assert node_params.check('cameras', ['front/left', 'rear']) is None


def test_each_camera_pairs_its_own_depth_and_camera_info(cameras):
    """use_depth with two cameras: each PersonArray is lifted with its own camera's depth
    image (cam0: the scene, people 2-4 m away; cam1: a flat 6 m depth), not the other's."""
    from sensor_msgs.msg import CameraInfo

    from rtmo_train.data.synthetic import render_depth_sequence, scene_camera_matrix

    width, height = 320, 240
    image, depth, truth = next(render_depth_sequence(1, 1, width, height))
    k = [float(v) for v in scene_camera_matrix(width, height).ravel()]
    cams = cameras(['cam0', 'cam1'], use_depth=True)
    extra = {}
    for name in ('cam0', 'cam1'):
        extra[name] = (cams.peer.create_publisher(Image, f'{name}/depth', RELIABLE),
                       cams.peer.create_publisher(CameraInfo, f'{name}/camera_info', RELIABLE))
    cams.activate()
    assert wait_for(lambda: all(p.get_subscription_count() > 0
                                for pair in extra.values() for p in pair))
    # qos_reliability auto re-subscribes reliable on seeing these publishers: a message sent
    # across that switch can be lost
    assert wait_for(lambda: all(s.inputs.watches[n].current == 'reliable'
                                for s in cams.node.streams.values()
                                for n in ('depth', 'camera_info')), 10.0)
    depths = {'cam0': depth, 'cam1': np.full_like(depth, 6.0)}
    for name in ('cam0', 'cam1'):
        header = Header(frame_id=name + '_optical')
        header.stamp.sec, header.stamp.nanosec = 1, 5
        mm = np.round(depths[name] * 1000).astype(np.uint16)
        depth_pub, info_pub = extra[name]
        info_pub.publish(CameraInfo(header=header, height=height, width=width,
                                    distortion_model='plumb_bob', d=[0.0] * 5, k=k,
                                    p=[k[0], 0.0, k[2], 0.0, 0.0, k[4], k[5], 0.0, 0.0, 0.0,
                                       1.0, 0.0], r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]))
        depth_pub.publish(Image(header=header, height=height, width=width, encoding='16UC1',
                                is_bigendian=0, step=2 * width, data=mm.tobytes()))
    time.sleep(0.5)  # depth and camera_info first, as cameras publish them
    for name in ('cam0', 'cam1'):
        cams.send(name, image, 5)
    assert wait_for(lambda: all(len(cams.poses[n]) == 1 for n in ('cam0', 'cam1')), 20.0)
    zs = {}
    for name in ('cam0', 'cam1'):
        people = [p for p in cams.poses[name][0].persons if p.score > 0.3]
        assert people, name
        zs[name] = [p.position.z for p in people]
    assert all(1.0 < z < 5.0 for z in zs['cam0']), zs  # the scene's walkers
    assert all(abs(z - 6.0) < 0.05 for z in zs['cam1']), zs  # cam1's own flat depth
    assert truth
