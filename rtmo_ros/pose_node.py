"""The ``rtmo_pose`` lifecycle node: images in, PersonArray / markers / diagnostics out.

Lifecycle (``rclpy.lifecycle``, managed with ``~/change_state`` or by ``autostart``):
  configure  reads the parameters, loads the engine (may download a model or build a TensorRT
             engine), creates the publishers and latches ``skeleton``;
  activate   subscribes to ``image`` (or ``image/compressed``) and starts the worker thread;
  deactivate unsubscribes and stops the worker, keeping the engine;
  cleanup    frees the engine (``PoseEstimator.close()``: session and GPU memory);
  shutdown   does whatever of the above is still needed, from any state.
Every transition logs why it failed and returns FAILURE with its partial work undone (rclpy
itself would swallow the exception and return ERROR without a word).

The subscription callback only hands the message to a one-slot buffer (:mod:`frame_buffer`);
the worker thread runs the engine on the newest frame, so frames arriving while it is busy are
dropped (and counted) instead of queued, and latency does not grow with a backlog.

``/diagnostics`` is published from construction on, on a steady-clock timer in its own
callback group: it keeps reporting while a transition works (download, engine build: the
message says what it is doing, e.g. ``configuring: building engine: ... (3/7), 95 s``) and
while a paused ``/clock`` stops ROS time. Transitions (``change_state`` and the autostart) run
in a callback group of their own too, so ``get_state`` and the parameter services answer
during a minutes-long configure. ``main`` spins a multi-threaded executor for that reason.
"""
import copy
import functools
import os
import signal
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage

try:
    from rclpy.exceptions import InvalidHandle
except ImportError:  # Humble
    from rclpy._rclpy_pybind11 import InvalidHandle

from rtmo_msgs.msg import SkeletonInfo
from rtmo_ros import conversions, node_params
from rtmo_ros.diagnostics import diagnostic_status
from rtmo_ros.engine.draw import draw_poses
from rtmo_ros.frame_buffer import LatestFrame
from rtmo_ros.image_conversion import (
    ImageError,
    bgr_to_image,
    compressed_to_bgr,
    image_to_bgr,
    serialized_to_bgr,
)
from rtmo_ros.markers import MarkerStyle, person_array_to_markers
from rtmo_ros.node_cameras import make_streams
from rtmo_ros.node_inputs import THROTTLE_S
from rtmo_ros.node_params import NodeParams
from rtmo_ros.perception.stamp_sync import stamp_ns

NODE_NAME = 'rtmo_pose'
STOP_TIMEOUT_S = 3.0  # deactivate/cleanup/shutdown wait this long for the frame in progress
QOS_CHECK_PERIOD_S = 1.0  # how often qos_reliability auto looks at the image publishers
EXIT_GRACE_S = 2.0  # autostart_failure exit: how long the last ERROR may wait for a reader
DISCOVERY_S = 1.5  # ... and how long after start-up it waits before it is sent at the earliest
LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                     reliability=ReliabilityPolicy.RELIABLE)
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE

# what the operator can do after each failed transition
FIX = {'configure': 'fix the cause above, then configure again',
       'activate': 'the node stays inactive; fix the cause above, then activate again',
       'deactivate': 'the node stays active; deactivate again or shut it down',
       'cleanup': 'everything else was released; call cleanup again to reach unconfigured'}


def transition(step, undo=None):
    """Wrap a lifecycle callback: an exception is logged with its cause and the fix, ``undo``
    (a method taking the state) rolls back the partial work, and the transition returns
    FAILURE."""
    def decorate(callback):
        @functools.wraps(callback)
        def run(self, state):
            self.busy = step
            self._progress = ('', time.monotonic())
            try:
                return callback(self, state)
            except Exception as err:  # noqa: BLE001 - every cause must reach the log
                cause = f'{type(err).__name__}: {err}'
                self.get_logger().error(f'{step} failed: {cause} ({FIX[step]})')
                if step == 'configure':
                    self.config_error = f'configure failed: {cause}'
                if undo is not None:
                    try:
                        undo(self, state)
                    except Exception as again:  # noqa: BLE001 - the cause is logged already
                        self.get_logger().error(f'undoing the failed {step} raised too: '
                                                f'{again!r}')
                return FAILURE
            finally:
                self.busy = None
        return run
    return decorate


def _release(node, state):
    node.release()


def _undo_activate(node, state):
    node._stop_processing()
    LifecycleNode.on_deactivate(node, state)  # switch the lifecycle publishers off again


class PoseNode(LifecycleNode):
    """RTMO multi-person pose estimation as a managed (lifecycle) node named ``rtmo_pose``.

    Raises ValueError at construction when a parameter holds a value outside its choices.
    """

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        node_params.declare(self)
        self.params = NodeParams.from_node(self)
        refused = node_params.problems(self.params)
        if refused:
            raise ValueError('; '.join(refused))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.engine = None
        self.busy = None          # name of the transition in progress
        self.config_error = ''    # why the last configure failed ('' after a success)
        self.exit_requested = Future()  # done (with the exit code) when main should return
        self._buffer = LatestFrame()
        self._worker = None
        self._stuck = []          # worker threads abandoned in a frame that did not return
        self._running = {}        # worker thread ident -> monotonic start of its frame
        # per camera: subscriptions, publishers, tracker, counts (node_cameras); new at
        # every configure
        self.streams = make_streams(self, self.params.cameras)
        self._qos_timer = None
        self._pubs = {}           # the node's own publishers (skeleton)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._progress = ('', 0.0)  # (what the transition does, monotonic start of it)
        self._transitions = MutuallyExclusiveCallbackGroup()
        self._move_change_state(self._transitions)
        self._born = time.monotonic()
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(
            self.params.diagnostics_period, self.publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(), clock=self._steady)

    def _move_change_state(self, group):
        """Serve ``change_state`` from ``group`` instead of the default callback group.

        rclpy's LifecycleNode creates its services in the default group and (up to Kilted) has
        no argument to change that; the executor reads each entity's ``callback_group``, so
        re-assigning it keeps a long transition from holding up ``get_state``, the parameter
        services and the image callback, which stay in the default group.
        """
        for service in self.services:
            if service.srv_type is ChangeState:
                service.callback_group = group
                group.add_entity(service)

    def report_progress(self, text):
        """Say what the running transition is doing (on /diagnostics, with the time it has
        been running)."""
        self._progress = (text, self._progress[1])
        self.get_logger().info(text, throttle_duration_sec=10.0)

    # -- lifecycle transitions ---------------------------------------------------------------
    @transition('configure', undo=_release)
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the engine and create the publishers.

        SUCCESS -> inactive. FAILURE (model missing/unloadable, backend unavailable, a keypoint
        count without a skeleton) -> unconfigured, with the cause and its fix logged and
        shown on /diagnostics until the next configure.
        """
        self.params = NodeParams.from_node(self)
        self.engine = self._load_engine(self.params)
        skeleton_msg = self._skeleton_info()  # raises for a keypoint count we cannot name
        self._create_publishers()
        self._pubs['skeleton'].publish(skeleton_msg)
        self.config_error = ''
        self.get_logger().info(f'configured: {self.engine!r}{self._batching()}')
        return SUCCESS

    def _batching(self):
        """How the cameras share the engine, for the configure log ('' for one camera)."""
        count, limit = len(self.streams), self.engine.max_batch
        if count == 1:
            return ''
        if limit is None or limit >= count:
            return f'; {count} cameras in one engine call per frame'
        return (f'; {count} cameras, but the graph takes a batch of at most {limit}: '
                f'{-(-count // limit)} engine calls per frame (export with rtmo-export '
                '--dynamic-batch for one)')

    @transition('activate', undo=_undo_activate)
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Switch the publishers on, subscribe to the images and start the worker.

        SUCCESS -> active; FAILURE -> inactive, subscription and worker undone.
        """
        if self.engine is None:
            raise RuntimeError('no model is loaded (did an earlier cleanup fail?); run '
                               'cleanup, then configure')
        result = super().on_activate(state)  # activates the lifecycle publishers
        self._buffer = LatestFrame()
        self._worker = threading.Thread(target=self._work, args=(self._buffer,),
                                        name='rtmo_pose_worker', daemon=True)
        self._worker.start()
        listening = ', '.join(stream.open() for stream in self.streams.values())
        self._qos_timer = self.create_timer(QOS_CHECK_PERIOD_S, self._check_publishers,
                                            clock=self._steady)
        self.get_logger().info(f'active: listening on {listening}')
        return result

    @transition('deactivate')
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker; the engine stays loaded. SUCCESS -> inactive.

        Returns within STOP_TIMEOUT_S even when a frame hangs in the backend.
        """
        self._stop_processing()
        return super().on_deactivate(state)

    @transition('cleanup', undo=_release)
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and free the engine (GPU memory too). SUCCESS -> unconfigured.

        FAILURE (``close()`` raised) -> inactive with everything released; cleanup again.
        """
        self.release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything still held, from any state. SUCCESS -> finalized (always)."""
        self._release_logged('shutdown')
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything after a failed transition. SUCCESS -> unconfigured."""
        self._release_logged('error recovery')
        return SUCCESS

    # -- autostart ---------------------------------------------------------------------------
    def start(self):
        """Schedule the autostart (configure + activate) on the executor, if enabled."""
        if self.params.autostart:
            self._autostart_after(0.001, delay=1.0)

    def _autostart_after(self, seconds, delay):
        timer = None

        def attempt():
            timer.cancel()
            self.destroy_timer(timer)
            self._autostart(delay)

        timer = self.create_timer(seconds, attempt, clock=self._steady,
                                  callback_group=self._transitions)

    def _autostart(self, delay):
        """Configure (when unconfigured) and activate; on failure retry with back-off or exit."""
        if self.state_label() == 'unconfigured' and self.trigger_configure() != SUCCESS:
            failed = 'configure'
        elif self.state_label() == 'inactive' and self.trigger_activate() != SUCCESS:
            failed = 'activate'
        else:
            return
        if self.params.autostart_failure == 'exit':
            self.get_logger().fatal(f'autostart: {failed} failed and autostart_failure is '
                                    'exit: exiting with code 1 (launch respawn or systemd may '
                                    'restart the node)')
            self._publish_last_words()
            self.exit_requested.set_result(1)
            return
        self.get_logger().warning(f'autostart: {failed} failed; next attempt in {delay:g} s '
                                  '(autostart_failure: retry)')
        self._autostart_after(delay, min(2.0 * delay, self.params.autostart_retry_max_s))

    def _publish_last_words(self):
        """Publish the ERROR status once, delivered: a node that fails within a second of
        starting may not have matched the diagnostics aggregator yet."""
        # discovery of the readers already on the network takes up to about a second
        time.sleep(max(0.0, self._born + DISCOVERY_S - time.monotonic()))
        deadline = time.monotonic() + EXIT_GRACE_S
        while self._diag_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.publish_diagnostics()
        self._diag_pub.wait_for_all_acked(Duration(seconds=EXIT_GRACE_S))

    def state_label(self):
        """Label of the current lifecycle state ('unconfigured', 'configuring', 'active'...)."""
        return self._state_machine.current_state[1]

    # -- resources ---------------------------------------------------------------------------
    def _load_engine(self, p):
        """Create the PoseEstimator from the parameters; raise with a one-sentence fix."""
        if not p.model:
            raise ValueError('parameter model is empty; set it to an RTMO .onnx/.engine/.pth '
                             'file or a zoo name, e.g. --ros-args -p model:=/path/rtmo-s.onnx')
        self.report_progress(f'loading model {p.model}')
        from rtmo_ros.engine import PoseEstimator  # heavy: numpy/OpenCV + the backend

        return PoseEstimator(p.model, backend=p.backend, device=p.device or None,
                             score_thr=p.score_thr, nms_thr=p.nms_thr,
                             max_persons=p.max_persons or None,
                             precision='fp16' if p.precision == 'auto' else p.precision,
                             cache_dir=p.engine_cache_dir or None,
                             num_threads=p.num_threads or None,
                             ort_provider=p.ort_provider, progress=self.report_progress)

    def _create_publishers(self):
        # a plain publisher: valid from configure on, also while inactive; one for all cameras
        self._pubs = {'skeleton': self.create_publisher(SkeletonInfo, 'skeleton', LATCHED)}
        self.streams = make_streams(self, self.params.cameras, self.streams)
        for stream in self.streams.values():
            stream.configure(self.params.perception())

    def _check_publishers(self):
        for stream in self.streams.values():
            stream.inputs.check_publishers()

    def _skeleton_info(self):
        e = self.engine
        return conversions.skeleton_info(e.skeleton, self.params.model, e.input_size,
                                         e.backend, e.precision)

    def _stop_processing(self):
        """Unsubscribe, wake the worker and wait (bounded) for its current frame to finish."""
        if self._qos_timer is not None:
            self.destroy_timer(self._qos_timer)
            self._qos_timer = None
        for stream in self.streams.values():
            stream.close()
        self._buffer.close()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join(STOP_TIMEOUT_S)
            if worker.is_alive():
                self._stuck.append(worker)
                self.get_logger().error(
                    f'a frame did not finish within {STOP_TIMEOUT_S:g} s: the backend seems to '
                    'hang; its worker thread is abandoned (check the device and /diagnostics)')

    def _hung(self):
        self._stuck = [w for w in self._stuck if w.is_alive()]
        return bool(self._stuck)

    def release(self):
        """Stop processing, destroy the publishers, close the engine.

        Raises what ``close()`` raised, after everything else was released. An engine a hung
        frame is still inside is not closed (freeing it under that thread could crash the
        process): it is dropped and freed when the frame returns.
        """
        self._stop_processing()
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs = {}
        for stream in self.streams.values():
            stream.destroy_publishers()
        engine, self.engine = self.engine, None
        if engine is not None and self._hung():
            self.get_logger().warning('not closing the engine: a hung frame still uses it')
        elif engine is not None:
            engine.close()

    def _release_logged(self, why):
        try:
            self.release()
        except Exception as err:  # noqa: BLE001 - shutting down: report, then carry on
            self.get_logger().error(f'{why}: releasing the engine raised {err!r}; it was '
                                    'dropped')

    # -- the pipeline ------------------------------------------------------------------------
    def hand_over(self, stream, msg):
        """Subscription callback of ``stream``: hand the frame over, never block."""
        stream.stats.count('received')
        if self._buffer.put((stream, msg, time.monotonic()), key=stream.name):
            stream.stats.count('dropped')

    def _work(self, buffer):
        """Worker thread: process the newest frame of each camera until ``buffer`` closes."""
        me = threading.get_ident()
        while True:
            items = buffer.take_all()
            if not items:
                return
            self._running[me] = started = time.monotonic()
            frames = list(items.values())
            try:
                self._process(frames)
            except Exception as err:  # noqa: BLE001 - keep the node alive, report the frames
                for stream, _, _ in frames:
                    stream.stats.count('failed')
                self.get_logger().error(f'pose estimation failed: {err}',
                                        throttle_duration_sec=THROTTLE_S)
            finally:
                del self._running[me]
            took = time.monotonic() - started
            if took > self.params.inference_timeout_s:
                for stream, _, _ in frames:
                    stream.stats.count('timeouts')
                self.get_logger().error(
                    f'a frame took {took:.1f} s, longer than inference_timeout_s '
                    f'({self.params.inference_timeout_s:g} s)', throttle_duration_sec=THROTTLE_S)

    def _decode(self, msg):
        """(header, BGR image) of a frame: serialized bytes (the node's raw subscriptions) or
        a message."""
        limit = self.params.max_image_pixels
        if isinstance(msg, bytes):
            compressed = self.params.image_transport == 'compressed'
            return serialized_to_bgr(msg, compressed, max_pixels=limit)
        if isinstance(msg, CompressedImage):
            return msg.header, compressed_to_bgr(msg, max_pixels=limit)
        return msg.header, image_to_bgr(msg, max_pixels=limit)

    def _decoded(self, frames):
        """[(stream, header, received, BGR image, wait ms, convert ms)] of the frames that
        decode; the others are counted invalid on their camera and logged (throttled)."""
        good = []
        for stream, msg, received in frames:
            t0 = time.monotonic()
            try:
                header, image = self._decode(msg)
            except ImageError as err:
                stream.stats.count('invalid')
                self.get_logger().warning(f'skipped an image{stream.label()}: {err}',
                                          throttle_duration_sec=THROTTLE_S)
                continue
            good.append((stream, header, received, image, 1e3 * (t0 - received),
                         1e3 * (time.monotonic() - t0)))
        return good

    def _process(self, frames):
        """Run the newest frame of every camera through one engine call, then each camera's
        perception and publishers."""
        engine = self.engine
        if engine is None or not self._pubs:
            return  # released while these frames waited
        good = self._decoded(frames)
        if not good:
            return
        all_poses = engine.batch([frame[3] for frame in good])
        stages = engine.timings  # of the whole batch: every camera waited for all of it
        for (stream, header, received, image, wait_ms, convert_ms), poses in zip(good,
                                                                                  all_poses):
            poses.check(engine.num_keypoints)
            t2 = time.monotonic()
            camera = stream.inputs.camera_for(header, image.shape)
            depth_m = (stream.inputs.depth_for(header, image.shape)
                       if camera is not None else None)
            tracked = stream.pipeline.update(poses, stamp_ns(header) * 1e-9, depth_m,
                                             camera)
            if tracked.reset:
                self.get_logger().info(f'image header stamps went backwards{stream.label()} '
                                       '(a bag looping?): tracks, smoothing and velocities '
                                       'were reset')
            t3 = time.monotonic()
            # the CDR bytes straight from the arrays (rtmo_ros.cdr): ~30 us instead of ~3 ms
            # of message objects and rclpy serialization for 50 people, on the latency path
            stream.pubs['poses'].publish(conversions.person_array_bytes(
                poses, header, engine.skeleton.name, tracked))
            t4 = time.monotonic()
            self._publish_extras(stream.pubs, engine, poses, tracked, image, camera,
                                 header)
            stream.stats.record({'wait': wait_ms, 'convert': convert_ms,
                                 'preprocess': stages.preprocess_ms,
                                 'inference': stages.inference_ms,
                                 'postprocess': stages.postprocess_ms,
                                 'perception': 1e3 * (t3 - t2), 'publish': 1e3 * (t4 - t3),
                                 'total': 1e3 * (t4 - received)})

    def _publish_extras(self, pubs, engine, poses, tracked, image, camera, header):
        """Publish markers, detections and the annotated image (each when enabled), after the
        poses: off their latency path."""
        p = self.params
        # each is built only while someone subscribes (a PersonArray of 50 people and its
        # markers take milliseconds of Python)
        if p.publish_markers and pubs['markers'].get_subscription_count() > 0:
            people = conversions.poses_to_person_array(poses, header, engine.skeleton.name,
                                                       tracked)
            style = MarkerStyle(p.marker_scale, p.marker_depth, p.marker_line_width,
                                p.marker_joint_size, p.marker_keypoint_thr)
            size = (image.shape[1], image.shape[0])
            pubs['markers'].publish(person_array_to_markers(people, size, style, camera))
        if (p.publish_detections and 'detections' in pubs
                and pubs['detections'].get_subscription_count() > 0):
            pubs['detections'].publish(conversions.poses_to_detections(poses, header,
                                                                       tracked.track_ids))
        annotated = pubs['image_annotated']
        if p.publish_annotated_image and annotated.get_subscription_count() > 0:
            shown = copy.copy(poses)
            shown.keypoints = tracked.keypoints  # what poses carries: smoothed when smoothing
            drawn = draw_poses(image, shown, engine.skeleton, p.annotate_keypoint_thr,
                               track_ids=tracked.track_ids)
            annotated.publish(bgr_to_image(drawn, header))

    # -- diagnostics -------------------------------------------------------------------------
    def problems(self, stream=None):
        """[(level, message)] the operator must see beyond the frame counts (node-wide ones,
        and those of ``stream``'s subscriptions)."""
        found = []
        state = self.state_label()
        if self.config_error and state in ('unconfigured', 'configuring'):
            found.append((DiagnosticStatus.ERROR, self.config_error))
        doing, since = self._progress
        if self.busy == 'configure' and doing:
            found.append((DiagnosticStatus.OK, f'configuring: {doing}, '
                                               f'{time.monotonic() - since:.0f} s'))
        started = list(self._running.values())
        if started:
            stalled = time.monotonic() - min(started)
            if stalled > self.params.inference_timeout_s:
                found.append((DiagnosticStatus.ERROR,
                              f'a frame has been running for {stalled:.1f} s (> '
                              f'inference_timeout_s {self.params.inference_timeout_s:g} s): the '
                              'backend may hang'))
        return found + (stream.inputs.problems() if stream is not None else [])

    def publish_diagnostics(self):
        """Publish one DiagnosticStatus per camera (on the steady-clock timer, from
        construction on)."""
        try:
            msg = DiagnosticArray(status=[self._diagnostic_status(stream)
                                          for stream in list(self.streams.values())])
        except Exception as err:  # noqa: BLE001 - never let diagnostics take the node down
            self.get_logger().error(f'diagnostics failed: {err!r}', throttle_duration_sec=60.0)
            return
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def _diagnostic_status(self, stream):
        engine = self.engine
        info = {'state': self.state_label(), 'model': self.params.model,
                **stream.inputs.info()}
        if stream.name:
            info['camera'] = stream.name
        hardware_id = 'none'
        if engine is not None:
            hardware_id = engine.hardware_id
            info.update(backend=engine.backend, precision=engine.precision,
                        input_size='%dx%d' % engine.input_size)
            if engine.ort_provider is not None:
                info['ort_provider'] = engine.ort_provider
        window = stream.stats.window()
        return diagnostic_status(
            f'{self.get_fully_qualified_name()}: pose estimation{stream.label()}', hardware_id,
            info['state'], window, window.totals, info, self.problems(stream))

    # -- parameters --------------------------------------------------------------------------
    def _on_set_parameters(self, params):
        """Validate new values; apply the runtime ones (thresholds go to the engine now)."""
        for param in params:
            reason = node_params.check(param.name, param.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        changes = {p.name: p.value for p in params if p.name in node_params.RUNTIME}
        self.params = self.params.updated(changes)
        engine = self.engine
        if engine is not None:
            engine.score_thr = self.params.score_thr
            engine.nms_thr = self.params.nms_thr
            engine.max_persons = self.params.max_persons or None
        later = [p.name for p in params if p.name not in node_params.RUNTIME]
        startup = [name for name in later if name in node_params.STARTUP]
        if startup:
            self.get_logger().info(f'{", ".join(startup)} will apply at the next start')
        later = [name for name in later if name not in node_params.STARTUP]
        if later:
            self.get_logger().info(f'{", ".join(later)} will apply at the next configure')
        return SetParametersResult(successful=True)


def spin(executor, node):
    """Spin until the context shuts down or the node asks to exit.

    A subscription destroyed (deactivate, a QoS change) while another executor thread builds
    its wait set makes rclpy raise InvalidHandle out of spin (ros2/rclpy#1206, #1284, still in
    rclpy 9): that wait is simply retried.
    """
    while executor.context.ok() and not node.exit_requested.done():
        try:
            executor.spin_once(timeout_sec=0.2)
        except InvalidHandle:
            continue


def main(args=None):
    """Run the node; with ``autostart:=true`` it configures and activates itself.

    Returns 0 after Ctrl-C / SIGTERM, 1 when start-up is refused or when the autostart failed
    with ``autostart_failure:=exit``.
    """
    rclpy.init(args=args)
    try:
        node = PoseNode()
    except Exception as err:  # noqa: BLE001 - e.g. a parameter override outside its range
        rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {err}')
        rclpy.try_shutdown()
        return 1
    # three threads: a transition (which may download or build for minutes), the diagnostics
    # timer and the default group (get_state, parameters, images) each have their own
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    node.start()
    code = 0
    try:
        spin(executor, node)
        if node.exit_requested.done():
            code = node.exit_requested.result()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # a second Ctrl-C (the terminal's and launch's) must not cut the release short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        busy = node.busy
        node._release_logged('exit')
        node.destroy_node()
        rclpy.try_shutdown()
    if busy:
        # a transition is still running in an executor thread (e.g. a download); the
        # interpreter would wait for it at exit: leave now, everything we hold is released
        print(f'[rtmo_pose] exiting during {busy}', flush=True)
        os._exit(code)
    return code


if __name__ == '__main__':
    raise SystemExit(main())
