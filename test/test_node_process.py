"""The node as a process, as launch or systemd runs it: start-up, autostart failure, signals, QoS.

Each test starts ``python -m rtmo_ros.pose_node`` with its own namespace and talks to it over
DDS from a client context (lifecycle and parameter services, /diagnostics, images).
"""
import itertools
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import cv2
import pytest

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from waiting import wait_for  # noqa: E402

from rtmo_msgs.msg import PersonArray  # noqa: E402
from rtmo_ros.engine.zoo import bundled_path  # noqa: E402
from rtmo_ros.image_conversion import bgr_to_image  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
_names = itertools.count()


class NodeUnderTest:
    """The node process plus a client node spinning in a thread."""

    def __init__(self, tmp_path, env=None, **params):
        self.ns = f'/proc_{os.getpid()}_{next(_names)}'
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.client = rclpy.create_node('client', namespace=self.ns, context=self.context)
        self.diags, self.poses = [], []
        self.client.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        self.client.create_subscription(PersonArray, 'poses', self.poses.append, RELIABLE)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.client)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.log_path = tmp_path / f'{self.ns[1:]}.log'
        args = [sys.executable, '-m', 'rtmo_ros.pose_node', '--ros-args', '-r',
                f'__ns:={self.ns}']
        params = {'backend': 'onnxruntime', 'num_threads': 1, 'diagnostics_period': 0.25,
                  **params}
        for name, value in params.items():
            args += ['-p', f'{name}:={value}']
        env = dict(os.environ, PYTHONUNBUFFERED='1', RCUTILS_LOGGING_BUFFERED_STREAM='0',
                   **(env or {}))
        self._log = open(self.log_path, 'w')  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, cwd=REPO)

    def _on_diag(self, msg):
        self.diags.extend(s for s in msg.status if s.name.startswith(self.ns + '/'))

    def log(self):
        return self.log_path.read_text()

    def call(self, srv_type, name, request, timeout=20.0):
        cli = self.client.create_client(srv_type, f'{self.ns}/rtmo_pose/{name}')
        try:
            assert cli.wait_for_service(timeout_sec=timeout), f'no service {name}'
            future = cli.call_async(request)
            assert wait_for(future.done, timeout), f'{name} did not answer'
            return future.result()
        finally:
            self.client.destroy_client(cli)

    def state(self):
        return self.call(GetState, 'get_state', GetState.Request()).current_state.label

    def set_param(self, name, value):
        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, 'set_parameters', req).results[0]

    def subscription_reliability(self, topic):
        infos = self.client.get_subscriptions_info_by_topic(f'{self.ns}/{topic}')
        return [i.qos_profile.reliability for i in infos]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        self.executor.shutdown()
        self.client.destroy_node()
        rclpy.shutdown(context=self.context)



@pytest.fixture
def start(tmp_path):
    started = []

    def make(**params):
        started.append(NodeUnderTest(tmp_path, **params))
        return started[-1]

    yield make
    for node in started:
        node.close()


def people_image(width=320, height=240):
    from rtmo_train.data.synthetic import render_sequence

    return next(render_sequence(5, 1, width, height))[0]


def header(nanosec):
    h = Header(frame_id='camera')
    h.stamp.sec, h.stamp.nanosec = 7, nanosec
    return h


def test_a_misspelt_start_up_parameter_refuses_to_start_naming_the_choices(start):
    node = start(image_transport='compresed')
    assert node.proc.wait(timeout=30) == 1
    assert "image_transport must be one of raw, compressed; got 'compresed'" in node.log()


def test_autostart_failure_exit_publishes_the_error_then_exits_1(start):
    node = start(model='/nonexistent/model.onnx', autostart='true', autostart_failure='exit')
    assert node.proc.wait(timeout=30) == 1

    def errors():
        return [s for s in node.diags if s.level == DiagnosticStatus.ERROR]

    assert wait_for(errors, 5.0), (node.diags, node.log())
    assert 'does not exist' in errors()[-1].message
    assert 'autostart_failure is exit' in node.log()


def test_autostart_retries_with_back_off_and_recovers_once_the_model_exists(start):
    node = start(model='/nonexistent/model.onnx', autostart='true')
    assert wait_for(lambda: 'next attempt in 2 s' in node.log(), 20.0), node.log()
    assert node.proc.poll() is None

    def errors():
        return [s for s in node.diags if s.level == DiagnosticStatus.ERROR]

    assert wait_for(errors, 10.0) and 'configure failed' in errors()[-1].message
    assert node.state() == 'unconfigured'
    assert node.set_param('model', str(bundled_path())).successful
    assert wait_for(lambda: node.state() == 'active', 20.0)
    assert wait_for(lambda: node.diags[-1].level == DiagnosticStatus.WARN)  # no images yet


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_active_exits_0_promptly(start, sig):
    node = start(model=str(bundled_path()), autostart='true')
    assert wait_for(lambda: 'active: listening' in node.log(), 30.0), node.log()
    node.proc.send_signal(sig)
    assert node.proc.wait(timeout=10) == 0


@pytest.fixture
def stalled_mirror(tmp_path):
    """A zoo mirror on 127.0.0.1 whose model download stalls halfway (configure blocks)."""
    from download_server import start_server

    from rtmo_ros.engine import zoo

    routes, base, httpd = start_server()
    gate = threading.Event()
    url = zoo.get('rtmo-s-body7').onnx_url
    routes.hold('/' + url[len(zoo.BASE):], b'x' * 4096, gate)
    yield {'RTMO_ZOO_MIRROR': base, 'RTMO_HOME': str(tmp_path / 'models')}, routes
    gate.set()
    httpd.shutdown()


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_configure_exits_0_without_hanging(start, sig, stalled_mirror):
    env, routes = stalled_mirror
    node = start(env=env, model='rtmo-s-body7', autostart='true')
    assert wait_for(lambda: sum(routes.hits.values()) > 0, 30.0), node.log()
    assert wait_for(lambda: any(s.message.startswith('configuring') for s in node.diags), 5.0)
    node.proc.send_signal(sig)
    assert node.proc.wait(timeout=15) == 0
    assert 'exiting during configure' in node.log()


def test_lifecycle_and_parameter_services_answer_during_a_long_configure(start,
                                                                          stalled_mirror):
    """A configure stuck for minutes (here a stalled download; on a Jetson an engine build)
    leaves get_state, the parameter services and /diagnostics (saying what it does) alive."""
    env, routes = stalled_mirror
    node = start(env=env, model='rtmo-s-body7')
    change = node.client.create_client(ChangeState, f'{node.ns}/rtmo_pose/change_state')
    assert change.wait_for_service(timeout_sec=20.0)
    configure = ChangeState.Request()
    configure.transition.id = Transition.TRANSITION_CONFIGURE
    pending = change.call_async(configure)
    assert wait_for(lambda: sum(routes.hits.values()) > 0, 30.0), node.log()
    assert node.state() == 'configuring' and not pending.done()
    request = GetParameters.Request(names=['score_thr'])
    assert node.call(GetParameters, 'get_parameters', request).values[0].double_value == 0.1
    assert node.set_param('score_thr', 0.3).successful
    assert wait_for(lambda: any(s.message.startswith('configuring: loading model rtmo-s-body7')
                                for s in node.diags), 5.0), [s.message for s in node.diags]
    status = node.diags[-1]
    assert status.level == DiagnosticStatus.OK and status.message.endswith(' s')


def compressed(image, nanosec):
    ok, data = cv2.imencode('.jpg', image)
    return CompressedImage(header=header(nanosec), format='jpeg', data=data.tobytes())


def test_auto_qos_stays_best_effort_for_a_sensor_data_camera(start):
    node = start(model=str(bundled_path()), autostart='true', image_transport='compressed')
    camera = node.client.create_publisher(CompressedImage, 'image/compressed',
                                          qos_profile_sensor_data)
    assert wait_for(lambda: camera.get_subscription_count() > 0, 30.0)
    image = people_image()
    for i in range(20):  # best effort: some samples may be lost, the node must see some
        camera.publish(compressed(image, 100 + i))
        time.sleep(0.1)
    assert wait_for(lambda: node.poses, 5.0)
    assert node.subscription_reliability('image/compressed') == [ReliabilityPolicy.BEST_EFFORT]


def test_auto_qos_turns_reliable_for_a_reliable_camera_and_gets_every_720p_frame(start):
    node = start(model=str(bundled_path()), autostart='true', qos_depth=5)
    camera = node.client.create_publisher(Image, 'image', RELIABLE)
    assert wait_for(lambda: node.subscription_reliability('image')
                    == [ReliabilityPolicy.RELIABLE], 30.0)
    assert wait_for(lambda: 'image (reliable)' in node.log()
                    or 'image offer [\'reliable\']: subscribing reliable' in node.log(), 5.0)
    image = people_image(1280, 720)
    for stamp in range(200, 205):
        camera.publish(bgr_to_image(image, header(stamp)))
        assert wait_for(lambda s=stamp: any(p.header.stamp.nanosec == s for p in node.poses),
                        15.0), f'frame {stamp} of 1280x720 never answered'


def test_a_reliable_subscription_with_a_best_effort_camera_is_reported(start):
    node = start(model=str(bundled_path()), autostart='true', qos_reliability='reliable')
    node.client.create_publisher(Image, 'image', qos_profile_sensor_data)
    assert wait_for(lambda: any('incompatible QoS' in s.message for s in node.diags),
                    30.0), node.log()
    status = [s for s in node.diags if 'incompatible QoS' in s.message][-1]
    assert status.level == DiagnosticStatus.WARN and 'qos_reliability:=auto' in status.message
