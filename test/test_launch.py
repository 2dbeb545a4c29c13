"""`ros2 launch rtmo_ros pose.launch.py` for real: arguments, params file, lifecycle, respawn.

Each test starts ``ros2 launch`` as a process in its own session with its own namespace (so a
stale graph entry of another test can never answer), talks to the node with the ``ros2`` CLI
(``--no-daemon``: no daemon is ever started) and an rclpy client, then stops launch with SIGINT,
as Ctrl-C would, and checks that it exits. The bundled ``rtmo-tiny-synthetic`` model keeps the
node start-up at about a second.
"""
import importlib.util
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time

import pytest
import yaml

if shutil.which('ros2') is None or importlib.util.find_spec('launch_ros') is None:
    pytest.skip('ros2 launch is not installed (needs the ros2 CLI and launch_ros; source '
                'env.sh after make setup, or a ROS 2 distro)', allow_module_level=True)

try:
    from ament_index_python.packages import get_package_share_directory

    get_package_share_directory('rtmo_ros')
except (ImportError, LookupError) as err:  # PackageNotFoundError is a KeyError
    pytest.skip(f'rtmo_ros is not in the ament index ({err!r}); build it with make setup and '
                'source env.sh', allow_module_level=True)

rclpy = pytest.importorskip('rclpy')
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from waiting import wait_for  # noqa: E402

from rtmo_msgs.msg import PersonArray  # noqa: E402
from rtmo_ros.image_conversion import bgr_to_image  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
MODEL = 'rtmo-tiny-synthetic'
# seed 1 draws two people; the bundled model scores them ~0.92 and one background blob ~0.15,
# so score_thr 0.5 from the parameters file (default 0.1) leaves exactly the two people
SEED, SCORE_THR = 1, 0.5
CLI_TIMEOUT_S = 30.0
# `--spin-time` (s) of successive tries of one ros2 CLI call: how long it waits for discovery
# (a call takes about twice that plus a second of start-up). One second usually suffices on
# loopback, not always with two busy cores: a call that misses the node tries again, longer.
SPIN_S = ('1', '3', '5')


def unique(tag):
    """A namespace no other test or process on this machine uses."""
    return f'/launch_{tag}_{os.getpid()}'


class Launch:
    """``ros2 launch rtmo_ros pose.launch.py ARGS`` with its output collected in a file."""

    def __init__(self, tmp_path, *args):
        self.log_path = tmp_path / 'launch.log'
        self._log = open(self.log_path, 'w')
        env = dict(os.environ, PYTHONUNBUFFERED='1', RCUTILS_LOGGING_BUFFERED_STREAM='0')
        # own session: the SIGINT below reaches launch only, which forwards it to the node
        # once (a terminal's Ctrl-C signals the whole group, launch and node alike)
        self.proc = subprocess.Popen(['ros2', 'launch', 'rtmo_ros', 'pose.launch.py', *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=REPO, start_new_session=True)

    def output(self):
        return self.log_path.read_text()

    def stop(self, timeout=20.0):
        """SIGINT launch; return its exit code. Kill the whole session if it hangs."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    return self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
                    pytest.fail(f'ros2 launch did not exit {timeout:g} s after SIGINT:\n'
                                f'{self.output()}')
            return self.proc.returncode
        finally:
            self._log.close()


@pytest.fixture
def launch(tmp_path):
    """Start launch processes; each is stopped (SIGINT, then kill) when the test ends."""
    started = []

    def start(*args):
        started.append(Launch(tmp_path, *args))
        return started[-1]

    yield start
    for item in started:
        if item.proc.returncode is None:
            item.stop()


def ros2(*args, spins=SPIN_S):
    """Run a ``ros2`` CLI command without the daemon; return (exit code, stdout + stderr).

    Tries once per ``spins`` discovery time while the CLI's discovery misses the node.
    """
    for spin in spins:
        done = subprocess.run(['ros2', *args, '--no-daemon', '--spin-time', spin],
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S, cwd=REPO)
        text = done.stdout + done.stderr
        if 'Node not found' not in text:
            break
    return done.returncode, text


def lifecycle_state(node, spins=SPIN_S):
    """The node's state label ('active', 'unconfigured', ...) or '' when it is not found."""
    code, text = ros2('lifecycle', 'get', node, spins=spins)
    words = text.split()
    return words[0] if code == 0 and words else ''


def wait_for_state(node, want, launched, timeout=40.0):
    deadline = time.monotonic() + timeout
    state = ''
    while time.monotonic() < deadline and launched.proc.poll() is None:
        state = lifecycle_state(node, spins=SPIN_S[:1])  # the loop tries again
        if state == want:
            return
        time.sleep(0.5)
    pytest.fail(f'{node} is {state or "not found"}, not {want}, after {timeout:g} s:\n'
                f'{launched.output()}')


class Client:
    """An rclpy node in its own context, spinning in a thread, that records what arrives."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('launch_test_client', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def record(self, msg_type, topic):
        got = []
        self.node.create_subscription(msg_type, topic, got.append, RELIABLE)
        return got

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def client():
    made = Client()
    yield made
    made.close()



def params_file(tmp_path):
    """config/pose.yaml with score_thr changed: proves the file given to launch is used."""
    data = yaml.safe_load((REPO / 'config' / 'pose.yaml').read_text())
    assert data['/**']['ros__parameters']['score_thr'] != SCORE_THR
    data['/**']['ros__parameters']['score_thr'] = SCORE_THR
    path = tmp_path / 'pose.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


def synthetic_image(nanosec):
    from rtmo_train.data.synthetic import render_sequence

    image, persons = next(render_sequence(SEED, 1, 320, 240))
    header = Header(frame_id='launch_test_camera')
    header.stamp.sec, header.stamp.nanosec = 1700000000, nanosec
    return bgr_to_image(image, header), persons


def test_launch_remaps_loads_the_params_file_and_publishes_poses_and_detections(
        launch, client, tmp_path):
    from vision_msgs.msg import Detection2DArray

    ns = unique('full')
    node = f'{ns}/rtmo_pose'
    camera = f'{ns}_cam/image'  # outside the namespace: only the remapping leads there
    launched = launch(f'namespace:={ns}', f'image_topic:={camera}', f'model:={MODEL}',
                      'backend:=onnxruntime', f'params_file:={params_file(tmp_path)}')
    poses = client.record(PersonArray, f'{ns}/poses')
    detections = client.record(Detection2DArray, f'{ns}/detections')
    pub = client.node.create_publisher(Image, camera, RELIABLE)
    wait_for_state(node, 'active', launched)
    code, text = ros2('param', 'get', node, 'score_thr')
    assert code == 0 and float(text.split()[-1]) == SCORE_THR, text

    msg, persons = synthetic_image(4242)
    assert wait_for(lambda: pub.get_subscription_count() >= 1, 10.0), launched.output()
    # the node's image subscription starts best effort (qos_reliability auto) and turns
    # reliable within a second of seeing this publisher: send until one frame comes through
    deadline = time.monotonic() + 20.0
    while not poses and time.monotonic() < deadline:
        pub.publish(msg)
        wait_for(lambda: poses, 1.0)
    assert poses, f'no PersonArray on {ns}/poses:\n{launched.output()}'
    assert wait_for(lambda: detections, 5.0), f'no Detection2DArray on {ns}/detections'
    got, boxes = poses[0], detections[0]
    assert got.header == msg.header and boxes.header == msg.header
    assert len(got.persons) == len(persons) == 2
    assert all(p.score >= SCORE_THR for p in got.persons)
    assert len(boxes.detections) == len(got.persons)
    for det, person in zip(boxes.detections, got.persons):
        centre = det.bbox.center.position
        assert abs(centre.x - 0.5 * (person.x_min + person.x_max)) < 1e-3
        assert abs(centre.y - 0.5 * (person.y_min + person.y_max)) < 1e-3
        assert det.results[0].hypothesis.class_id == 'person'
    assert launched.stop() == 0, launched.output()
    assert 'process has finished cleanly' in launched.output()


def test_autostart_false_waits_unconfigured_for_the_lifecycle_cli(launch):
    ns = unique('manual')
    node = f'{ns}/rtmo_pose'
    launched = launch(f'namespace:={ns}', f'model:={MODEL}', 'backend:=onnxruntime',
                      'autostart:=false', 'cameras:=front,rear')
    wait_for_state(node, 'unconfigured', launched)
    code, text = ros2('param', 'get', node, 'cameras')
    assert code == 0 and "['front', 'rear']" in text, text
    # an autostart would have run 1 ms after the node started, seconds ago; configure succeeds
    # only from unconfigured, so this also proves the node was still waiting
    for step in ('configure', 'activate'):
        code, text = ros2('lifecycle', 'set', node, step)
        assert code == 0 and 'Transitioning successful' in text, text
    assert lifecycle_state(node) == 'active'
    assert launched.stop() == 0, launched.output()


def test_respawn_restarts_a_node_whose_autostart_failed(launch, tmp_path):
    ns = unique('respawn')
    missing = tmp_path / 'no-such-model.onnx'
    launched = launch(f'namespace:={ns}', f'model:={missing}', 'backend:=onnxruntime',
                      'respawn:=true', 'respawn_delay:=1.0')
    # autostart_failure exit (set by respawn:=true): each start fails configure, exits with
    # code 1, and launch starts the node again after respawn_delay
    assert wait_for(lambda: launched.output().count('process started with pid') >= 2, 40.0), \
        launched.output()
    text = launched.output()
    assert 'exit code 1' in text and str(missing) in text
    assert 'autostart_failure is exit' in text
    launched.stop()  # launch reports the node's failures in its own exit code; it must exit
