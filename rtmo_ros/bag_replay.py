"""Online replay: publish a bag's images into a running ``rtmo_pose`` node and record its poses.

The node runs as its own process (``python -m rtmo_ros.pose_node``) in a private namespace,
exactly as on a robot, so what is measured includes DDS transport and the node's real
processing. One node process serves two passes over the bag:

1. lock-step (accuracy): each frame is published when the node's PersonArray for the previous
   one has arrived, so no frame is dropped however slow the machine; a frame whose answer does
   not come within ``frame_timeout`` s counts as a miss and the pass goes on. Its AP depends on
   the model only, not on the CPU.
2. real time: the frames are published at their recorded spacing divided by ``rate``; frames
   arriving while the model is busy are dropped by the node (newest-frame policy), as on the
   robot. Drops, latency and the AP with drops as misses describe the machine.

Latency of a frame = time this process received the node's ``PersonArray`` minus the time it
published the image with the same header stamp (one monotonic clock, one process). Images that
do not decode (``rtmo_ros.image_conversion.ImageError``, what makes the node skip them) are not
published; a repeated header stamp is one frame (the node answers per stamp).

With a depth and a camera info topic the node runs with ``use_depth:=true``; in both passes the
depth image and the camera info paired with a frame (nearest header stamp within the node's
``depth_sync_tolerance_s``) are published on ``<ns>/depth`` and ``<ns>/camera_info`` just
before the image, as recorded. The track ids, 3D keypoints, positions and velocities are read
back from the node's PersonArrays.
"""
import os
import pathlib
import signal
import subprocess
import sys
import time

from tqdm import tqdm

from rtmo_ros import bag_io
from rtmo_ros.bag_io import BagError
from rtmo_ros.bag_report import RunResult, temporary_name
from rtmo_ros.image_conversion import ImageError

# Model loading (ONNX Runtime session, or a TensorRT engine build) happens before the node
# subscribes; a TensorRT build of a large model can take minutes.
READY_TIMEOUT_S = 300.0
# After the last image: the node always processes the newest frame, so its answer ends the run;
# this bounds the wait when that answer never comes (node died, frame lost).
DRAIN_TIMEOUT_S = 15.0
# Lock-step: the longest wait for the answer to one frame before it counts as a miss. It only
# bounds a lost answer (node busy elsewhere, message lost): raise it for a model that needs
# seconds per frame, or the pass would count its slow frames as misses.
FRAME_TIMEOUT_S = 10.0
ALIVE_CHECK_S = 0.5  # how often a wait looks whether the node process is still running


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
        # the log is written under a temporary name and renamed onto log_path by stop()
        self.log_path = pathlib.Path(log_path)
        self._live_log = temporary_name(self.log_path)
        self._log = open(self._live_log, 'wb')  # noqa: SIM115 - closed in stop()
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
        path = self.log_path if self._log.closed else self._live_log
        if not self._log.closed:
            self._log.flush()
        with open(path, 'rb') as log:
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
        if not self._log.closed:
            self._log.close()
            os.replace(self._live_log, self.log_path)


class PoseRecorder:
    """rclpy side of the replay: image publisher, raw PersonArray subscription, clocks."""

    def __init__(self, namespace, msgtype, depth=False):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

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
        # depth and camera info of each frame, published just before it (use_depth:=true)
        self.partners = {}
        if depth:
            self.partners = {
                'depth': self.node.create_publisher(Image, f'{namespace}/depth', image_qos),
                'camera_info': self.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                                          image_qos)}
        self.sent_ns = {}       # header stamp -> monotonic ns at its first publish
        self.received = []      # (stamp ns, monotonic ns, wall-clock ns, CDR bytes)
        self.answered = set()   # header stamps of the PersonArrays received
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
        publishers = [self.publisher, *self.partners.values()]
        while (any(p.get_subscription_count() == 0 for p in publishers)
               or not self._poses_publishers()):
            node_process.check_alive()
            if time.monotonic() > deadline:
                topics = ', '.join(p.topic_name for p in publishers)
                raise BagError(f'the pose node did not subscribe to {topics} within '
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
        raw = bytes(rawdata)
        stamp = bag_io.cdr_stamp(raw)
        self.received.append((stamp, time.monotonic_ns(), time.time_ns(), raw))
        self.answered.add(stamp)

    def reset(self):
        """Forget what was sent and received (a new pass starts)."""
        self.sent_ns, self.received, self.answered = {}, [], set()

    def wait_for(self, stamps, timeout, node_process):
        """Spin until every stamp of ``stamps`` has an answer; False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        next_check = 0.0
        while not self.answered.issuperset(stamps):
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= next_check:
                node_process.check_alive()
                next_check = now + ALIVE_CHECK_S
            self.executor.spin_once(timeout_sec=min(0.05, deadline - now))
        return True

    def spin_until(self, deadline_ns):
        """Process callbacks until the monotonic clock reaches ``deadline_ns``."""
        while (left := deadline_ns - time.monotonic_ns()) > 0:
            self.executor.spin_once(timeout_sec=left / 1e9)

    def publish(self, stamp, rawdata, depth=None, camera_info=None):
        """Publish the serialized image ``rawdata`` whose header stamp is ``stamp``.

        ``depth`` / ``camera_info``: its serialized partners, published first (when given).
        """
        for name, partner in (('depth', depth), ('camera_info', camera_info)):
            if partner is not None and name in self.partners:
                self.partners[name].publish(partner)
        self.sent_ns.setdefault(stamp, time.monotonic_ns())
        self.publisher.publish(rawdata)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)


def replay_online(reader, topic, model, backend='auto', rate=1.0, log_path='node.log',
                  score_thr=0.1, node_params=(), progress=True,
                  frame_timeout=FRAME_TIMEOUT_S, depth_topic=None, info_topic=None,
                  sync_tolerance_ns=bag_io.SYNC_TOLERANCE_NS):
    """Run the lock-step and the real-time pass of ``topic`` through one fresh pose node.

    Returns (lock-step :class:`RunResult`, real-time :class:`RunResult`). The real-time pass
    publishes at the recorded spacing (the bag's receive timestamps) divided by ``rate``.
    ``node_params``: extra ``name:=value`` parameters for the node (``use_depth:=true`` with
    ``depth_topic`` and ``info_topic``, whose messages paired within ``sync_tolerance_ns``
    are sent with each frame).
    """
    if rate <= 0:
        raise BagError(f'--rate must be > 0 (a replay speed multiplier), got {rate}')
    if frame_timeout <= 0:
        raise BagError(f'--frame-timeout must be > 0 s, got {frame_timeout}')
    msgtype = bag_io.image_topics(reader)[topic]
    transport = 'compressed' if msgtype == bag_io.COMPRESSED else 'raw'
    namespace = f'/rtmo_bag_eval_{os.getpid()}'
    node = NodeProcess(namespace, model, backend, transport, log_path, score_thr, node_params)
    source = FrameSource(reader, topic, depth_topic, info_topic, sync_tolerance_ns)
    recorder = None
    try:
        recorder = PoseRecorder(namespace, msgtype, depth=bool(depth_topic))
        recorder.wait_ready(node)
        lockstep, skip = run_lockstep(recorder, node, source, frame_timeout,
                                      node_max_pixels(node_params), progress)
        realtime = run_realtime(recorder, node, source, rate, skip, progress)
        realtime.invalid, realtime.duplicates = lockstep.invalid, lockstep.duplicates
    finally:
        if recorder is not None:
            recorder.close()
        node.stop()
    return lockstep, realtime


class FrameSource:
    """The frames of one image topic with their serialized depth and camera info partners."""

    def __init__(self, reader, topic, depth_topic=None, info_topic=None,
                 sync_tolerance_ns=bag_io.SYNC_TOLERANCE_NS):
        self.reader, self.topic = reader, topic
        self.depth_topic, self.info_topic = depth_topic, info_topic
        self.sync_tolerance_ns = sync_tolerance_ns

    def __len__(self):
        return bag_io.count_messages(self.reader, self.topic)

    def __iter__(self):
        """Yield (Frame, depth CDR bytes or None, camera info CDR bytes or None)."""
        if not self.depth_topic:
            for frame in bag_io.read_frames(self.reader, self.topic):
                yield frame, None, None
            return
        for synced in bag_io.read_synced(self.reader, self.topic, self.depth_topic,
                                         self.info_topic, self.sync_tolerance_ns, decode=False):
            yield synced.frame, synced.depth_raw, synced.info_raw


def node_max_pixels(node_params):
    """Return the ``max_image_pixels`` set in ``node_params``, or None (the default).

    The replay decodes with the same cap, so it skips exactly the frames the node skips.
    """
    for item in node_params:
        name, _, value = item.partition(':=')
        if name.strip() == 'max_image_pixels':
            try:
                return int(value)
            except ValueError:
                return None
    return None


def run_lockstep(recorder, node, source, frame_timeout=FRAME_TIMEOUT_S, max_pixels=None,
                 progress=True):
    """Send every frame when the previous answer has arrived; return (RunResult, skip).

    ``source``: a :class:`FrameSource`. Undecodable images are not sent (``skip``: their
    message indices, for the real-time pass); a repeated stamp is sent once. A frame unanswered
    after ``frame_timeout`` s is a miss (in ``timed_out``; an answer arriving later is ignored).
    """
    recorder.reset()
    stamps, invalid, skip, duplicates, timed_out, depth_frames = [], [], set(), 0, [], 0
    start = time.monotonic()
    for frame, depth, info in tqdm(source, total=len(source), unit='frame', desc='lock-step',
                                   disable=not progress):
        try:
            frame.decode(max_pixels)
        except ImageError:
            invalid.append(frame.stamp_ns)
            skip.add(frame.index)
            continue
        if frame.stamp_ns in recorder.sent_ns:
            duplicates += 1
            continue
        stamps.append(frame.stamp_ns)
        depth_frames += depth is not None and info is not None
        recorder.publish(frame.stamp_ns, frame.rawdata, depth, info)
        if not recorder.wait_for([frame.stamp_ns], frame_timeout, node):
            timed_out.append(frame.stamp_ns)
    wall_s = time.monotonic() - start
    if timed_out:  # let the node finish what it still holds before the real-time pass
        recorder.wait_for(timed_out, frame_timeout, node)
    result = _collect(recorder, stamps, wall_s, exclude=set(timed_out))
    result.invalid, result.duplicates, result.timed_out = invalid, duplicates, timed_out
    result.depth_frames = depth_frames if source.depth_topic else None
    return result, skip


def run_realtime(recorder, node, source, rate=1.0, skip=(), progress=True):
    """Publish every frame (but ``skip``) at its recorded time / rate; return a RunResult."""
    recorder.reset()
    stamps, first_log, last, depth_frames = {}, None, None, set()
    start, t0 = time.monotonic(), time.monotonic_ns()
    for frame, depth, info in tqdm(source, total=len(source), unit='frame',
                                   desc='real time', disable=not progress):
        if frame.index in skip:
            continue
        first_log = frame.log_ns if first_log is None else first_log
        recorder.spin_until(t0 + int((frame.log_ns - first_log) / rate))
        recorder.publish(frame.stamp_ns, frame.rawdata, depth, info)
        stamps.setdefault(frame.stamp_ns)
        if depth is not None and info is not None:
            depth_frames.add(frame.stamp_ns)
        last = frame.stamp_ns
        if len(stamps) % 30 == 0:
            node.check_alive()
    if last is not None:  # the newest frame is never dropped: its answer ends the pass
        recorder.wait_for([last], DRAIN_TIMEOUT_S, node)
        recorder.spin_until(time.monotonic_ns() + 200_000_000)  # late repeats
    result = _collect(recorder, list(stamps), time.monotonic() - start)
    result.depth_frames = len(depth_frames) if source.depth_topic else None
    return result


def _collect(recorder, stamps, wall_s, exclude=()):
    """Turn what the recorder saw in this pass into a RunResult (matched by header stamp).

    Answers to stamps this pass did not send, answers older than the stamp's publication
    (left over from the previous pass) and answers to ``exclude`` stamps are left out.
    """
    store = bag_io.typestore()
    poses, tracks, latency, arrays = {}, {}, {}, []
    skeleton = None
    for stamp, mono_ns, wall_ns, raw in recorder.received:
        sent = recorder.sent_ns.get(stamp)
        if sent is None or mono_ns < sent or stamp in exclude:
            continue
        arrays.append((wall_ns, raw))
        if stamp in poses:
            continue  # a repeated stamp: the first answer counts
        msg = store.deserialize_cdr(raw, bag_io.PERSON_ARRAY)
        skeleton = msg.skeleton
        num_keypoints = len(msg.persons[0].keypoints) if msg.persons else 17
        poses[stamp] = bag_io.person_array_to_poses(msg, num_keypoints)
        tracks[stamp] = bag_io.person_array_to_tracked(msg, num_keypoints)
        latency[stamp] = (mono_ns - sent) / 1e6
    info = recorder.skeleton_info
    return RunResult(stamps=stamps, poses=poses, latency_ms=latency, person_arrays=arrays,
                     skeleton=skeleton or (info.skeleton if info else 'coco17'), wall_s=wall_s,
                     backend=info.backend if info else None, tracks=tracks)
