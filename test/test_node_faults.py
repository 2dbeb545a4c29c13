"""Fault injection into a real in-process node: every failure is logged, counted and visible.

The node runs in its own rclpy context on a MultiThreadedExecutor (as ``main`` runs it), with
the bundled model on ONNX Runtime; a peer node in the same context publishes images and reads
``/diagnostics`` over DDS. Faults are injected where a real robot meets them: a model graph
whose keypoint count has no skeleton (a real ONNX file), a backend whose ``infer`` raises,
returns NaN or the wrong keypoint count, or hangs (the real backend wrapped), an engine whose
``close()`` raises, and a paused simulated clock.
"""
import itertools
import math
import os
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from waiting import wait_for  # noqa: E402

from rtmo_msgs.msg import PersonArray  # noqa: E402
from rtmo_ros import pose_node  # noqa: E402
from rtmo_ros.engine.zoo import bundled_path  # noqa: E402
from rtmo_ros.image_conversion import bgr_to_image  # noqa: E402
from rtmo_ros.pose_node import PoseNode  # noqa: E402

OK, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_names = itertools.count()


def people_image():
    from rtmo_train.data.synthetic import render_sequence

    image, persons = next(render_sequence(3, 1, 320, 240))
    assert persons
    return image


class Harness:
    """A context, an executor thread, and a peer that publishes images and keeps diagnostics."""

    def __init__(self):
        self.ns = f'/faults_{os.getpid()}_{next(_names)}'
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.peer = rclpy.create_node('peer', namespace=self.ns, context=self.context)
        self.diags, self.poses = [], []
        self.peer.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        self.peer.create_subscription(PersonArray, 'poses', self.poses.append, RELIABLE)
        self.images = self.peer.create_publisher(Image, 'image', RELIABLE)
        self.executor.add_node(self.peer)
        self.nodes = []
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diag(self, msg):
        self.diags.extend(s for s in msg.status if s.name.startswith(self.ns + '/'))

    def node(self, **params):
        params = {'model': str(bundled_path()), 'backend': 'onnxruntime', 'num_threads': 1,
                  'diagnostics_period': 0.2, **params}
        node = PoseNode(context=self.context, namespace=self.ns, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def send(self, image, nanosec):
        header = Header(frame_id='camera')
        header.stamp.sec, header.stamp.nanosec = 1, nanosec
        self.images.publish(bgr_to_image(image, header))

    def wait_diag(self, predicate, timeout=10.0, start=None):
        """The first diagnostic status from now on (or from index ``start`` of ``diags``) that
        satisfies ``predicate``."""
        start = len(self.diags) if start is None else start
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in self.diags[start:]:
                if predicate(status):
                    return status
            time.sleep(0.02)
        last = self.diags[-1] if self.diags else None
        raise AssertionError(f'no matching diagnostics in {timeout} s; last: {last}')

    def close(self):
        self.executor.shutdown()
        for node in self.nodes:
            node.release() if node.engine is not None else None
            node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.context)


def values(status):
    return {kv.key: kv.value for kv in status.values}



@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def active_node(harness, **params):
    node = harness.node(**params)
    assert node.trigger_configure() == OK and node.trigger_activate() == OK
    assert wait_for(lambda: harness.images.get_subscription_count() > 0)
    return node


def test_diagnostics_flow_from_construction_and_show_the_configure_error(harness, tmp_path):
    missing = tmp_path / 'absent.onnx'
    node = harness.node(model=str(missing))
    status = harness.wait_diag(lambda s: True)
    assert status.name == f'{harness.ns}/rtmo_pose: pose estimation'
    assert (status.level, status.message, status.hardware_id) == (
        DiagnosticStatus.OK, 'unconfigured', 'none')
    assert node.trigger_configure() == FAILURE
    status = harness.wait_diag(lambda s: s.level == DiagnosticStatus.ERROR)
    assert 'configure failed' in status.message and str(missing) in status.message
    assert values(status)['state'] == 'unconfigured'
    node.set_parameters([Parameter('model', value=str(bundled_path()))])
    assert node.trigger_configure() == OK
    status = harness.wait_diag(lambda s: values(s)['state'] == 'inactive')
    assert status.level == DiagnosticStatus.OK and status.hardware_id == 'onnxruntime:cpu'


def onnx_with_keypoints(path, keep):
    """The bundled graph with its keypoints output cut to ``keep`` joints (a real ONNX file)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(bundled_path()))
    graph = model.graph
    for node in graph.node:
        node.output[:] = ['keypoints_all' if o == 'keypoints' else o for o in node.output]
    consts = {'cut_starts': [0], 'cut_ends': [keep], 'cut_axes': [2]}
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k)
                             for k, v in consts.items())
    graph.node.append(helper.make_node('Slice', ['keypoints_all', *consts], ['keypoints']))
    out = next(o for o in graph.output if o.name == 'keypoints')
    out.type.tensor_type.shape.dim[2].dim_value = keep
    onnx.save(model, str(path))
    return path


def test_a_model_whose_keypoint_count_has_no_skeleton_fails_configure(harness, tmp_path):
    node = harness.node(model=str(onnx_with_keypoints(tmp_path / 'k5.onnx', 5)))
    assert node.trigger_configure() == FAILURE
    assert node.engine is None and node._pubs == {}
    assert 'no skeleton with 5 keypoints' in node.config_error
    assert node.state_label() == 'unconfigured'


class Faulty:
    """Wraps a real backend; ``mode`` decides what ``infer`` does."""

    def __init__(self, backend):
        self.backend, self.mode, self.release = backend, 'pass', threading.Event()
        self.closed = False

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def infer(self, inputs):
        out = self.backend.infer(inputs)
        if self.mode == 'raise':
            raise RuntimeError('injected backend failure')
        if self.mode == 'nan':
            return [(dets, kpts * np.nan) for dets, kpts in out]
        if self.mode == 'five':
            return [(dets, kpts[:, :5]) for dets, kpts in out]
        if self.mode == 'hang':
            self.release.wait(60)
        return out

    def close(self):
        self.closed = True
        self.backend.close()


def inject(node):
    faulty = Faulty(node.engine._backend)
    node.engine._backend = faulty
    return faulty


@pytest.mark.parametrize('mode,says', [('raise', 'injected backend failure'),
                                       ('nan', 'non-finite keypoints'),
                                       ('five', 'keypoints')])
def test_a_failing_backend_is_counted_and_the_node_stays_active(harness, mode, says):
    node = active_node(harness)
    faulty = inject(node)
    image = people_image()
    harness.send(image, 1)
    assert wait_for(lambda: harness.poses and harness.poses[-1].persons)
    faulty.mode = mode
    harness.send(image, 2)
    status = harness.wait_diag(lambda s: s.level == DiagnosticStatus.ERROR)
    assert 'inference failed on 1 images' == status.message
    assert values(status)['failed_total'] == '1'
    assert not [m for m in harness.poses if m.header.stamp.nanosec == 2]
    faulty.mode = 'pass'
    harness.send(image, 3)
    assert wait_for(lambda: harness.poses[-1].header.stamp.nanosec == 3)
    assert node.state_label() == 'active'
    faulty.mode = mode  # what the worker met, called directly
    with pytest.raises(RuntimeError if mode == 'raise' else ValueError, match=says):
        node.engine(image).check(17)


def test_a_hanging_backend_shows_error_and_transitions_still_return(harness):
    node = active_node(harness, inference_timeout_s=0.5)
    faulty = inject(node)
    faulty.mode = 'hang'
    harness.send(people_image(), 1)
    status = harness.wait_diag(lambda s: s.level == DiagnosticStatus.ERROR)
    assert 'has been running' in status.message and 'inference_timeout_s' in status.message
    start = time.monotonic()
    assert node.trigger_deactivate() == OK
    assert node.trigger_cleanup() == OK
    assert time.monotonic() - start < pose_node.STOP_TIMEOUT_S + 2.0
    assert node.engine is None and not faulty.closed  # not freed under the hung thread
    faulty.release.set()
    assert wait_for(lambda: not node._hung(), 5.0)
    assert node.trigger_configure() == OK and node.trigger_activate() == OK


def test_close_raising_in_cleanup_fails_cleanup_and_a_second_cleanup_recovers(harness):
    node = harness.node()
    assert node.trigger_configure() == OK
    engine = node.engine

    def broken_close():
        raise OSError('device lost')

    engine.close = broken_close
    assert node.trigger_cleanup() == FAILURE
    assert node.state_label() == 'inactive' and node.engine is None and node._pubs == {}
    assert node.trigger_activate() == FAILURE  # nothing loaded: refused, says why
    assert node.state_label() == 'inactive'
    assert node.trigger_cleanup() == OK and node.state_label() == 'unconfigured'


@pytest.mark.parametrize('name,value,allowed', [
    ('image_transport', 'compresed', 'raw, compressed'),
    ('qos_reliability', 'Reliable', 'auto, best_effort, reliable'),
    ('autostart_failure', 'restart', 'retry, exit')])
def test_a_bad_start_up_string_is_refused_naming_the_allowed_values(harness, name, value,
                                                                    allowed):
    with pytest.raises(ValueError, match=allowed):
        harness.node(**{name: value})


def test_diagnostics_keep_flowing_while_the_simulated_clock_is_paused(harness):
    harness.node(use_sim_time=True)  # nobody publishes /clock: ROS time stands at 0
    first = harness.wait_diag(lambda s: True)
    start = len(harness.diags)
    time.sleep(1.0)
    assert len(harness.diags) - start >= 3, 'diagnostics stopped with the clock'
    assert first.level == DiagnosticStatus.OK


def test_frames_that_cannot_have_3d_are_counted_and_the_node_keeps_publishing(harness):
    """No camera_info, a depth image of another size or encoding, no depth in time: NaN 3D,
    a counter on /diagnostics (WARN), and 2D poses as usual."""
    from sensor_msgs.msg import CameraInfo

    node = active_node(harness, use_depth=True)
    depth_pub = harness.peer.create_publisher(Image, 'depth', RELIABLE)
    info_pub = harness.peer.create_publisher(CameraInfo, 'camera_info', RELIABLE)
    assert wait_for(lambda: depth_pub.get_subscription_count() and
                    info_pub.get_subscription_count())
    # qos_reliability auto re-subscribes reliable within a second of seeing these reliable
    # publishers; a depth image sent across that switch can be lost (then counted no_depth)
    watches = node.streams[''].inputs.watches
    assert wait_for(lambda: all(watches[n].current == 'reliable'
                                for n in ('depth', 'camera_info')), 10.0)
    image = people_image()
    h, w = image.shape[:2]

    def depth(nanosec, width=w, encoding='16UC1'):
        header = Header(frame_id='camera')
        header.stamp.sec, header.stamp.nanosec = 1, nanosec
        size = 2 if encoding == '16UC1' else 1
        return Image(header=header, width=width, height=h, encoding=encoding,
                     step=size * width, data=bytes(size * width * h))

    def expect(nanosec, counter, since):
        """``since``: len(harness.diags) before the frame was sent. The frame is counted
        before its poses are published, so the status counting it may come out before the
        poses arrive here: look from the send on."""
        assert wait_for(lambda: any(m.header.stamp.nanosec == nanosec
                                    for m in harness.poses), 10.0)
        got = next(m for m in harness.poses if m.header.stamp.nanosec == nanosec)
        assert got.persons and all(math.isnan(p.position.z) for p in got.persons)
        status = harness.wait_diag(lambda s: int(values(s)[f'{counter}_total']) > 0,
                                   start=since)
        assert status.level == DiagnosticStatus.WARN and 'without 3D' in status.message

    since = len(harness.diags)
    harness.send(image, 10)  # no camera_info yet
    expect(10, 'no_camera_info', since)
    info = CameraInfo(width=w, height=h, k=[300.0, 0, w / 2, 0, 300.0, h / 2, 0, 0, 1],
                      p=[300.0, 0, w / 2, 0, 0, 300.0, h / 2, 0, 0, 0, 1, 0], d=[0.0] * 5,
                      distortion_model='plumb_bob')
    info.header.frame_id = 'camera'
    info_pub.publish(info)
    time.sleep(0.3)
    depth_pub.publish(depth(20, width=w // 2))  # not aligned: another size
    time.sleep(0.1)
    since = len(harness.diags)
    harness.send(image, 20)
    expect(20, 'depth_refused', since)
    depth_pub.publish(depth(30, encoding='8UC1'))  # not a REP 118 depth encoding
    time.sleep(0.1)
    harness.send(image, 30)
    assert wait_for(lambda: int(values(harness.diags[-1])['depth_refused_total']) >= 2, 10.0)
    since = len(harness.diags)
    harness.send(image, 40)  # no depth image at all
    expect(40, 'no_depth', since)
    assert node.state_label() == 'active'
