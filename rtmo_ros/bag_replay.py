"""Online replay: publish a bag's images into a running ``rtmo_pose`` node and record its poses.

The node runs as its own process (``python -m rtmo_ros.pose_node``) in a private namespace,
exactly as on a robot, so what is measured includes DDS transport, the node's newest-frame
policy (frames arriving while the model is busy are dropped) and its real processing time.
Latency of a frame = time this process received the node's ``PersonArray`` minus the time it
published the image with the same header stamp (one monotonic clock, one process).
"""
import collections
import os
import signal
import subprocess
import sys
import time

from tqdm import tqdm

from rtmo_ros import bag_io
from rtmo_ros.bag_io import BagError
from rtmo_ros.bag_report import RunResult

# Model loading (ONNX Runtime session, or a TensorRT engine build) happens before the node
# subscribes; a TensorRT build of a large model can take minutes.
READY_TIMEOUT_S = 300.0
# After the last image: the node always processes the newest frame, so its answer ends the run;
# this bounds the wait when that answer never comes (node died, frame lost).
DRAIN_TIMEOUT_S = 15.0


class NodeProcess:
    """The pose node as a child process; its output goes to ``log_path``."""

    def __init__(self, namespace, model, backend, transport, log_path, score_thr=0.1,
                 extra_params=()):
        # reliable images: every frame reaches the node; it still drops the ones that arrive
        # while it is busy (newest-frame policy), which is what the replay measures
        params = {'model': str(model), 'backend': backend, 'autostart': 'true',
                  'image_transport': transport, 'qos_reliability': 'reliable',
                  'score_thr': float(score_thr)}
        args = [sys.executable, '-m', 'rtmo_ros.pose_node', '--ros-args',
                '-r', f'__ns:={namespace}']
        for name, value in params.items():
            args += ['-p', f'{name}:={value}']
        for item in extra_params:
            args += ['-p', item]
        self.log_path = log_path
        self._log = open(log_path, 'wb')  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def check_alive(self):
        """Raise BagError (with the end of the node's log) when the process has exited."""
        code = self.proc.poll()
        if code is not None:
            self._log.flush()
            tail = self.log_tail()
            raise BagError(f'the pose node exited with code {code} (log {self.log_path}: '
                           f'{tail}); check --model/--backend and the log')

    def log_tail(self, lines=3):
        with open(self.log_path, 'rb') as log:
            text = log.read().decode(errors='replace').strip().splitlines()
        return ' | '.join(text[-lines:]) or 'empty'

    def stop(self, timeout=10.0):
        """Ask the node to shut down (SIGINT, as Ctrl-C), kill it when it does not."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class PoseRecorder:
    """rclpy side of the replay: image publisher, raw PersonArray subscription, clocks."""

    def __init__(self, namespace, msgtype):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=rclpy.SignalHandlerOptions.NO)
        self.node = rclpy.create_node('rtmo_bag_eval', namespace=namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        compressed = msgtype == bag_io.COMPRESSED
        self.image_topic = f'{namespace}/image' + ('/compressed' if compressed else '')
        self.poses_topic = f'{namespace}/poses'
        image_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(
            CompressedImage if compressed else Image, self.image_topic, image_qos)
        self.sent_ns = {}       # header stamp -> monotonic ns at publish
        self.received = []      # (monotonic ns, wall-clock ns, CDR bytes) per PersonArray
        self.subscription = None
        self.skeleton_info = None
        self._latch_skeleton(namespace)

    def _latch_skeleton(self, namespace):
        """Keep the node's latched SkeletonInfo (it names the backend that really runs)."""
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from rtmo_msgs.msg import SkeletonInfo

        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(SkeletonInfo, f'{namespace}/skeleton',
                                      lambda msg: setattr(self, 'skeleton_info', msg), latched)

    def wait_ready(self, node_process, timeout=READY_TIMEOUT_S):
        """Spin until the node subscribes to the images and publishes poses; then subscribe."""
        deadline = time.monotonic() + timeout
        while self.publisher.get_subscription_count() == 0 or not self._poses_publishers():
            node_process.check_alive()
            if time.monotonic() > deadline:
                raise BagError(f'the pose node did not subscribe to {self.image_topic} within '
                               f'{timeout:.0f} s (log {node_process.log_path}: '
                               f'{node_process.log_tail()})')
            self.executor.spin_once(timeout_sec=0.1)
        self._subscribe(self._poses_publishers()[0].qos_profile)

    def _poses_publishers(self):
        return self.node.get_publishers_info_by_topic(self.poses_topic)

    def _subscribe(self, offered):
        from rclpy.qos import QoSProfile

        from rtmo_msgs.msg import PersonArray

        # match the node's reliability; a deep queue so that no answer is lost here
        qos = QoSProfile(depth=100, reliability=offered.reliability)
        self.subscription = self.node.create_subscription(
            PersonArray, self.poses_topic, self._on_poses, qos, raw=True)
        # let the new subscription be matched before the first image goes out
        deadline = time.monotonic() + 5.0
        while self.subscription.get_publisher_count() == 0 and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def _on_poses(self, rawdata):
        self.received.append((time.monotonic_ns(), time.time_ns(), bytes(rawdata)))

    def spin_until(self, deadline_ns):
        """Process callbacks until the monotonic clock reaches ``deadline_ns``."""
        while (left := deadline_ns - time.monotonic_ns()) > 0:
            self.executor.spin_once(timeout_sec=left / 1e9)

    def publish(self, frame):
        self.sent_ns.setdefault(frame.stamp_ns, time.monotonic_ns())
        self.publisher.publish(frame.rawdata)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)


def replay_online(reader, topic, model, backend='auto', rate=1.0, log_path='node.log',
                  score_thr=0.1, node_params=(), progress=True):
    """Replay ``topic`` of an open bag into a fresh pose node; return a :class:`RunResult`.

    Frames are published at their recorded spacing (the bag's receive timestamps) divided by
    ``rate``. ``node_params``: extra ``name:=value`` parameters for the node.
    """
    if rate <= 0:
        raise BagError(f'--rate must be > 0 (a replay speed multiplier), got {rate}')
    msgtype = bag_io.image_topics(reader)[topic]
    transport = 'compressed' if msgtype == bag_io.COMPRESSED else 'raw'
    namespace = f'/rtmo_bag_eval_{os.getpid()}'
    node = NodeProcess(namespace, model, backend, transport, log_path, score_thr, node_params)
    recorder = None
    try:
        recorder = PoseRecorder(namespace, msgtype)
        recorder.wait_ready(node)
        start = time.monotonic()
        stamps = _publish_all(recorder, node, reader, topic, rate, progress)
        _drain(recorder, node, stamps[-1] if stamps else None)
        wall_s = time.monotonic() - start
    finally:
        if recorder is not None:
            recorder.close()
        node.stop()
    return _collect(recorder, stamps, wall_s)


def _publish_all(recorder, node, reader, topic, rate, progress):
    """Publish every frame at its recorded time / rate; return the stamps in bag order."""
    stamps, first_log, t0 = [], None, time.monotonic_ns()
    total = bag_io.count_messages(reader, topic)
    frames = bag_io.read_frames(reader, topic)
    for frame in tqdm(frames, total=total, unit='frame', desc='replay', disable=not progress):
        first_log = frame.log_ns if first_log is None else first_log
        recorder.spin_until(t0 + int((frame.log_ns - first_log) / rate))
        recorder.publish(frame)
        stamps.append(frame.stamp_ns)
        if len(stamps) % 30 == 0:
            node.check_alive()
    return stamps


def _drain(recorder, node, last_stamp):
    """Wait for the answer to the last frame (or DRAIN_TIMEOUT_S), then a short grace."""
    if last_stamp is None:
        return
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    done = False
    while not done and time.monotonic() < deadline:
        recorder.executor.spin_once(timeout_sec=0.1)
        done = any(bag_io.cdr_stamp(raw) == last_stamp for _, _, raw in recorder.received[-5:])
        if not done:
            node.check_alive()
    recorder.spin_until(time.monotonic_ns() + 200_000_000)


def _collect(recorder, stamps, wall_s):
    """Turn what the recorder saw into a RunResult (latency matched by header stamp)."""
    store = bag_io.typestore()
    poses, latency, arrays = {}, {}, []
    skeleton, counts = None, collections.Counter()
    for mono_ns, wall_ns, raw in recorder.received:
        msg = store.deserialize_cdr(raw, bag_io.PERSON_ARRAY)
        stamp = bag_io.stamp_ns(msg.header)
        arrays.append((wall_ns, raw))
        counts[stamp] += 1
        if stamp not in recorder.sent_ns or stamp in poses:
            continue  # not ours, or a repeat: the first answer counts
        skeleton = msg.skeleton
        num_keypoints = len(msg.persons[0].keypoints) if msg.persons else 17
        poses[stamp] = bag_io.person_array_to_poses(msg, num_keypoints)
        latency[stamp] = (mono_ns - recorder.sent_ns[stamp]) / 1e6
    info = recorder.skeleton_info
    return RunResult(stamps=stamps, poses=poses, latency_ms=latency, person_arrays=arrays,
                     skeleton=skeleton or (info.skeleton if info else 'coco17'), wall_s=wall_s,
                     backend=info.backend if info else None)
