"""The pose node's inputs: image, camera_info and depth subscriptions, their QoS, and pairing.

:class:`Inputs` owns the subscriptions the node has while active: ``image`` (or
``image/compressed``), ``camera_info`` (always: markers use the real intrinsics) and ``depth``
(with ``use_depth``). Each follows the ``qos_reliability`` rule (:mod:`rtmo_ros.image_qos`),
re-checked by :meth:`Inputs.check_publishers` on the node's timer. Depth images and camera
infos are only stored by their callbacks; the worker thread asks :meth:`camera_for` and
:meth:`depth_for` for the ones of each image after inference, so a depth image published a
little after its colour image is still found. A frame that cannot have 3D (no depth image in
time, one that is not aligned, no usable camera_info) is counted and warned about, throttled.
"""
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

try:  # Iron and newer
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from rtmo_ros import image_qos
from rtmo_ros.diagnostics import PipelineStats
from rtmo_ros.image_conversion import ImageError, depth_to_metres
from rtmo_ros.perception.camera import CameraInfos
from rtmo_ros.perception.stamp_sync import StampBuffer, stamp_ns

THROTTLE_S = 5.0  # at most one log line per cause every 5 s for per-frame problems
POLICY = {'reliable': ReliabilityPolicy.RELIABLE, 'best_effort': ReliabilityPolicy.BEST_EFFORT}


class Inputs:
    """Subscriptions of one camera for one activation of ``node`` (a PoseNode: its params and
    logger). ``prefix`` ('' or 'cam0/') goes before every topic; ``stats`` (a PipelineStats)
    counts the frames without 3D."""

    def __init__(self, node, on_image, prefix='', stats=None):
        self.node, self.on_image, self.prefix = node, on_image, prefix
        self.stats = stats if stats is not None else PipelineStats()
        self.subs = {}      # 'image' / 'camera_info' / 'depth' -> subscription
        self.watches = {}   # the same names -> image_qos.QosWatch
        self._depths = StampBuffer(30)
        self._cameras = CameraInfos(node.params.image_rectified)

    def topics(self):
        """name -> (message type, relative topic, callback, queue depth)."""
        p = self.node.params
        image = ((CompressedImage, 'image/compressed') if p.image_transport == 'compressed'
                 else (Image, 'image'))
        topics = {'image': (*image, self.on_image, p.qos_depth),
                  'camera_info': (CameraInfo, 'camera_info', self._on_camera_info, 5)}
        if p.use_depth:
            topics['depth'] = (Image, 'depth', self._on_depth, 5)
        return {name: (kind, self.prefix + topic, *rest)
                for name, (kind, topic, *rest) in topics.items()}

    def open(self):
        """Subscribe to every topic, best effort unless the publishers already say otherwise."""
        for name in self.topics():
            self.watches[name] = watch = image_qos.QosWatch(self.node.params.qos_reliability)
            self._subscribe(name, watch.choose(self._offered(name)))
        return ', '.join(f'{sub.topic_name} ({self.watches[name].current})'
                         for name, sub in self.subs.items())

    def close(self):
        for sub in self.subs.values():
            self.node.destroy_subscription(sub)
        self.subs = {}
        self._depths.clear()

    def _subscribe(self, name, reliability):
        """(Re)create subscription ``name`` with ``reliability`` ('reliable'|'best_effort')."""
        if name in self.subs:
            self.node.destroy_subscription(self.subs.pop(name))
        msg_type, topic, callback, depth = self.topics()[name]
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         reliability=POLICY[reliability])
        watch = self.watches[name]
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda event: self._on_incompatible_qos(name, watch))
        # images arrive as their serialized bytes, read in place by the worker
        # (image_conversion.serialized_to_bgr): rclpy would build the message first
        self.subs[name] = self.node.create_subscription(msg_type, topic, callback, qos,
                                                        event_callbacks=events,
                                                        raw=name == 'image')
        watch.current = reliability

    def _offered(self, name):
        """Reliability ('reliable'|'best_effort') offered by each publisher of topic ``name``."""
        sub = self.subs.get(name)
        topic = sub.topic_name if sub is not None else self._resolved(self.topics()[name][1])
        return [image_qos.reliability_name(info.qos_profile.reliability)
                for info in self.node.get_publishers_info_by_topic(topic)]

    def _resolved(self, topic):
        """The remapped, namespaced name of ``topic`` (before its subscription exists)."""
        resolve = getattr(self.node, 'resolve_topic_name', None)  # rclpy without it: expand
        return resolve(topic) if resolve is not None else topic

    def check_publishers(self):
        """Timer: follow the publishers' reliability (auto) on every subscribed topic."""
        for name, sub in list(self.subs.items()):
            watch = self.watches[name]
            offered = self._offered(name)
            wanted = watch.choose(offered)
            if wanted != watch.current:
                self.node.get_logger().info(
                    f'publishers on {sub.topic_name} offer {offered}: subscribing {wanted} '
                    f'instead of {watch.current} (qos_reliability auto)')
                self._subscribe(name, wanted)

    def _on_incompatible_qos(self, name, watch):
        watch.incompatible_events += 1
        self.node.get_logger().warning(
            f'a {name} publisher has a QoS incompatible with this {watch.current} '
            'subscription; set qos_reliability:=auto (or best_effort)',
            throttle_duration_sec=THROTTLE_S)

    def problems(self):
        """[(WARN, message)] for every subscription some publishers cannot reach."""
        found = []
        for name in list(self.subs):
            clash = self.watches[name].problem(self._offered(name))
            if clash:
                found.append((DiagnosticStatus.WARN, f'{name}: {clash}'))
        return found

    def info(self):
        """Diagnostic values of the image subscription."""
        sub = self.subs.get('image')
        return {'image_topic': sub.topic_name if sub is not None else '',
                'image_qos_reliability': self.watches['image'].current if sub else ''}

    # -- pairing, for the worker ---------------------------------------------------------------
    def _on_depth(self, msg):
        self._depths.add(stamp_ns(msg.header), msg)

    def _on_camera_info(self, msg):
        self._cameras.add(msg)

    def camera_for(self, header, shape):
        """The PinholeCamera of this image (camera_info of its frame and size), or None."""
        height, width = shape[:2]
        try:
            camera = self._cameras.camera_for(header.frame_id, width, height)
        except ValueError as err:
            self._without_3d('no_camera_info', f'camera_info refused: {err}')
            return None
        if camera is None and self.node.params.use_depth:
            self._without_3d('no_camera_info', f'no camera_info for frame {header.frame_id!r} '
                             f'at {width}x{height}; check camera_info_topic')
        return camera

    def depth_for(self, header, shape):
        """Metres of the depth image paired with this image (nearest stamp), or None."""
        p = self.node.params
        if not p.use_depth:
            return None
        depth = self._depths.take(stamp_ns(header), int(p.depth_sync_tolerance_s * 1e9))
        if depth is None:
            self._without_3d('no_depth', 'no depth image within depth_sync_tolerance_s '
                             f'({p.depth_sync_tolerance_s:g} s) of the image')
            return None
        height, width = shape[:2]
        if depth.header.frame_id != header.frame_id or (depth.width, depth.height) != (
                width, height):
            self._without_3d(
                'depth_refused', f'depth image refused: {depth.width}x{depth.height} in '
                f'{depth.header.frame_id!r}, the image is {width}x{height} in '
                f'{header.frame_id!r}; subscribe to depth aligned to the colour image')
            return None
        try:
            return depth_to_metres(depth, p.max_image_pixels)
        except ImageError as err:
            self._without_3d('depth_refused', f'depth image refused: {err}')
            return None

    def _without_3d(self, count, why):
        self.stats.count(count)
        where = f' ({self.prefix[:-1]})' if self.prefix else ''
        self.node.get_logger().warning(f'no 3D for this frame{where}: {why}',
                                       throttle_duration_sec=THROTTLE_S)
