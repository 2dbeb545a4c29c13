"""The ``rtmo_pose`` lifecycle node: images in, PersonArray / markers / diagnostics out.

Lifecycle (``rclpy.lifecycle``, managed with ``~/change_state`` or by ``autostart``):
  configure  reads the parameters, loads the engine (may build a TensorRT engine), creates the
             publishers and latches ``skeleton``;
  activate   subscribes to ``image`` (or ``image/compressed``) and starts the worker thread;
  deactivate unsubscribes and stops the worker, keeping the engine;
  cleanup    frees the engine (``PoseEstimator.close()``: session and GPU memory);
  shutdown   does whatever of the above is still needed, from any state.

The subscription callback only hands the message to a one-slot buffer (:mod:`frame_buffer`);
the worker thread runs the engine on the newest frame, so frames arriving while it is busy are
dropped (and counted) instead of queued, and latency does not grow with a backlog.
"""
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from rtmo_msgs.msg import PersonArray, SkeletonInfo
from rtmo_ros import conversions, node_params
from rtmo_ros.diagnostics import PipelineStats, diagnostic_status
from rtmo_ros.engine.draw import draw_poses
from rtmo_ros.frame_buffer import LatestFrame
from rtmo_ros.image_conversion import ImageError, bgr_to_image, compressed_to_bgr, image_to_bgr
from rtmo_ros.markers import MarkerStyle, person_array_to_markers
from rtmo_ros.node_params import NodeParams

NODE_NAME = 'rtmo_pose'
THROTTLE_S = 5.0  # at most one log line per cause every 5 s for per-frame problems
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
OUTPUT = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)  # matches every reader


class PoseNode(LifecycleNode):
    """RTMO multi-person pose estimation as a managed (lifecycle) node named ``rtmo_pose``."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        node_params.declare(self)
        self.params = NodeParams.from_node(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.engine = None
        self._buffer = LatestFrame()
        self._stats = PipelineStats()
        self._worker = None
        self._image_sub = None
        self._pubs = {}
        self._diag_timer = None

    # -- lifecycle transitions ---------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the engine and create the publishers.

        SUCCESS -> inactive. FAILURE (model missing/unloadable, backend unavailable) ->
        unconfigured, with the cause and its fix logged.
        """
        self.params = NodeParams.from_node(self)
        try:
            self.engine = self._load_engine(self.params)
        except Exception as err:  # noqa: BLE001 - every load error ends the transition cleanly
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        self._create_publishers()
        self._pubs['skeleton'].publish(self._skeleton_info())
        self._diag_timer = self.create_timer(self.params.diagnostics_period,
                                             self._publish_diagnostics)
        self.get_logger().info(f'configured: {self.engine!r}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Switch the publishers on, subscribe to the images and start the worker.

        SUCCESS -> active.
        """
        result = super().on_activate(state)  # activates the lifecycle publishers
        self._buffer.reopen()
        self._worker = threading.Thread(target=self._work, name='rtmo_pose_worker', daemon=True)
        self._worker.start()
        self._image_sub = self._subscribe(self.params)
        self.get_logger().info(f'active: listening on {self._image_sub.topic_name}')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker; the engine stays loaded. SUCCESS -> inactive."""
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and free the engine (GPU memory too). SUCCESS -> unconfigured."""
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything still held, from any state. SUCCESS -> finalized."""
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything after a failed transition. SUCCESS -> unconfigured."""
        self.release()
        return TransitionCallbackReturn.SUCCESS

    # -- resources ---------------------------------------------------------------------------
    def _load_engine(self, p):
        """Create the PoseEstimator from the parameters; raise with a one-sentence fix."""
        if not p.model:
            raise ValueError('parameter model is empty; set it to an RTMO .onnx/.engine/.pth '
                             'file or a zoo name, e.g. --ros-args -p model:=/path/rtmo-s.onnx')
        from rtmo_ros.engine import PoseEstimator  # heavy: numpy/OpenCV + the backend

        return PoseEstimator(p.model, backend=p.backend, device=p.device or None,
                             score_thr=p.score_thr, nms_thr=p.nms_thr,
                             max_persons=p.max_persons or None,
                             precision='fp16' if p.precision == 'auto' else p.precision,
                             cache_dir=p.engine_cache_dir or None,
                             num_threads=p.num_threads or None)

    def _create_publishers(self):
        make = self.create_lifecycle_publisher
        self._pubs = {'poses': make(PersonArray, 'poses', OUTPUT),
                      'markers': make(MarkerArray, 'markers', OUTPUT),
                      'image_annotated': make(Image, 'image_annotated', OUTPUT),
                      # plain publishers: valid from configure on, also while inactive
                      'skeleton': self.create_publisher(SkeletonInfo, 'skeleton', LATCHED),
                      'diagnostics': self.create_publisher(DiagnosticArray, '/diagnostics', 10)}
        if conversions.detections_available():
            self._pubs['detections'] = make(conversions.Detection2DArray, 'detections', OUTPUT)

    def _skeleton_info(self):
        e = self.engine
        return conversions.skeleton_info(e.skeleton, self.params.model, e.input_size,
                                         e.backend, e.precision)

    def _subscribe(self, p):
        reliability = (ReliabilityPolicy.RELIABLE if p.qos_reliability == 'reliable'
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p.qos_depth,
                         reliability=reliability)
        if p.image_transport == 'compressed':
            return self.create_subscription(CompressedImage, 'image/compressed', self._on_image,
                                            qos)
        return self.create_subscription(Image, 'image', self._on_image, qos)

    def _stop_processing(self):
        """Unsubscribe, wake the worker and wait for its current frame to finish."""
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        self._buffer.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def release(self):
        """Stop processing, destroy the publishers and timer, close the engine."""
        self._stop_processing()
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for name, pub in self._pubs.items():
            if name in ('skeleton', 'diagnostics'):
                self.destroy_publisher(pub)
            else:
                self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    # -- the pipeline ------------------------------------------------------------------------
    def _on_image(self, msg):
        """Subscription callback: hand the frame over, never block."""
        self._stats.count('received')
        if self._buffer.put((msg, time.monotonic())):
            self._stats.count('dropped')

    def _work(self):
        """Worker thread: process the newest frame until the buffer is closed."""
        while True:
            item = self._buffer.take()
            if item is None:
                return
            try:
                self._process(*item)
            except Exception as err:  # noqa: BLE001 - keep the node alive, report the frame
                self._stats.count('failed')
                self.get_logger().error(f'pose estimation failed: {err}',
                                        throttle_duration_sec=THROTTLE_S)

    def _process(self, msg, received):
        t0 = time.monotonic()
        try:
            image = (compressed_to_bgr(msg) if isinstance(msg, CompressedImage)
                     else image_to_bgr(msg))
        except ImageError as err:
            self._stats.count('invalid')
            self.get_logger().warning(f'skipped an image: {err}',
                                      throttle_duration_sec=THROTTLE_S)
            return
        t1 = time.monotonic()
        poses = self.engine(image)
        t2 = time.monotonic()
        people = conversions.poses_to_person_array(poses, msg.header, self.engine.skeleton.name)
        self._pubs['poses'].publish(people)
        t3 = time.monotonic()
        self._publish_extras(people, poses, image, msg.header)
        stages = self.engine.timings
        self._stats.record({'wait': 1e3 * (t0 - received), 'convert': 1e3 * (t1 - t0),
                            'preprocess': stages.preprocess_ms,
                            'inference': stages.inference_ms,
                            'postprocess': stages.postprocess_ms,
                            'publish': 1e3 * (t3 - t2), 'total': 1e3 * (t3 - received)})

    def _publish_extras(self, people, poses, image, header):
        """Publish markers, detections and the annotated image (each when enabled)."""
        p = self.params
        if p.publish_markers:
            style = MarkerStyle(p.marker_scale, p.marker_depth, p.marker_line_width,
                                p.marker_joint_size, p.marker_keypoint_thr)
            size = (image.shape[1], image.shape[0])
            self._pubs['markers'].publish(person_array_to_markers(people, size, style))
        if p.publish_detections and 'detections' in self._pubs:
            self._pubs['detections'].publish(conversions.poses_to_detections(poses, header))
        annotated = self._pubs['image_annotated']
        if p.publish_annotated_image and annotated.get_subscription_count() > 0:
            drawn = draw_poses(image, poses, self.engine.skeleton, p.annotate_keypoint_thr)
            annotated.publish(bgr_to_image(drawn, header))

    def _publish_diagnostics(self):
        engine = self.engine
        if engine is None:
            return
        info = {'backend': engine.backend, 'precision': engine.precision,
                'model': self.params.model, 'input_size': '%dx%d' % engine.input_size,
                'image_topic': self._image_sub.topic_name if self._image_sub else ''}
        status = diagnostic_status(f'{self.get_name()}: pose estimation', engine.backend,
                                   self._image_sub is not None, self._stats.window(),
                                   dict(self._stats.totals), info)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pubs['diagnostics'].publish(msg)

    # -- parameters --------------------------------------------------------------------------
    def _on_set_parameters(self, params):
        """Validate new values; apply the runtime ones (thresholds go to the engine now)."""
        for param in params:
            reason = node_params.check(param.name, param.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        changes = {p.name: p.value for p in params if p.name in node_params.RUNTIME}
        self.params = self.params.updated(changes)
        if self.engine is not None:
            self.engine.score_thr = self.params.score_thr
            self.engine.nms_thr = self.params.nms_thr
            self.engine.max_persons = self.params.max_persons or None
        later = [p.name for p in params if p.name not in node_params.RUNTIME]
        if later:
            self.get_logger().info(f'{", ".join(later)} will apply at the next configure')
        return SetParametersResult(successful=True)


def main(args=None):
    """Run the node; with ``autostart:=true`` it configures and activates itself."""
    rclpy.init(args=args)
    try:
        node = PoseNode()
    except Exception as err:  # noqa: BLE001 - e.g. a parameter override outside its range
        rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {err}')
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    if node.params.autostart:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
