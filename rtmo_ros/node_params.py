"""The pose node's parameters: one dataclass, each parameter declared once.

Every field of :class:`NodeParams` is a ROS parameter of the same name. Its default, description
and allowed values live in the field's metadata and nowhere else: :func:`declare` turns them into
``ParameterDescriptor`` objects (``FloatingPointRange`` / ``IntegerRange`` for numbers, which
rclpy enforces itself), :func:`check` validates the string choices (rclpy has no descriptor for
those) and :meth:`NodeParams.from_node` reads the values back. ``config/pose.yaml`` repeats the
defaults for the launch file; a test keeps the two equal.
"""
from dataclasses import MISSING, dataclass, field, fields, replace
import re

# Parameters applied while the node runs; every other one takes effect at the next configure
# (engine, QoS and transport parameters are read there).
RUNTIME = frozenset({'score_thr', 'nms_thr', 'max_persons', 'publish_markers',
                     'publish_annotated_image', 'publish_detections', 'marker_scale',
                     'marker_depth', 'marker_line_width', 'marker_joint_size',
                     'marker_keypoint_thr', 'annotate_keypoint_thr', 'max_image_pixels',
                     'inference_timeout_s'})
# Parameters read once, when the process starts (they shape the start-up itself).
STARTUP = frozenset({'autostart', 'autostart_failure', 'autostart_retry_max_s',
                     'diagnostics_period'})


def _param(default, description, *, low=None, high=None, choices=None):
    meta = {'description': description, 'range': None if low is None else (low, high),
            'choices': choices}
    if isinstance(default, list):  # a list parameter: a fresh list per instance
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


def default_of(f):
    """The default value of a NodeParams field (lists have a factory instead)."""
    return f.default_factory() if f.default is MISSING else f.default


# a camera name: ROS name tokens (letters, digits, underscores; not starting with a digit),
# '/'-separated for nested namespaces such as front/left
CAMERA_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$')


@dataclass(frozen=True)
class NodeParams:
    """Resolved parameters of the ``rtmo_pose`` node (see each field's description)."""

    cameras: list = _param([], 'camera names served by one engine call each frame: '
                               '[cam0, cam1] subscribes to cam0/image ... and publishes '
                               'cam0/poses ...; empty: one camera on image, poses, ...')
    model: str = _param('rtmo-s-body7', 'RTMO model: path to an .onnx/.engine/.pth file, a '
                        'model zoo name (downloaded once into the cache) or rtmo-tiny-synthetic '
                        '(bundled, offline)')
    backend: str = _param('auto', 'inference backend; auto picks tensorrt, then onnxruntime; '
                                  'openvino (CPU) only when named',
                          choices=('auto', 'onnxruntime', 'tensorrt', 'openvino', 'torch'))
    device: str = _param('', "device such as 'cpu' or 'cuda:0'; empty lets the engine choose")
    precision: str = _param('auto', 'numeric precision; auto = fp16 on TensorRT, else fp32 (never '
                                    'int8 or bf16); int8 = a calibrated int8 graph on ONNX '
                                    'Runtime (CPU); bf16 = OpenVINO on a CPU with native bf16',
                            choices=('auto', 'fp32', 'fp16', 'int8', 'bf16'))
    ort_provider: str = _param('auto', "ONNX Runtime's execution provider; auto = CPU, or on "
                                       'a CUDA device TensorRT > CUDA; cuda / tensorrt imply '
                                       'the onnxruntime backend',
                               choices=('auto', 'cpu', 'cuda', 'tensorrt'))
    engine_cache_dir: str = _param('', 'folder for built TensorRT engines; empty = engine '
                                       'default (~/.cache/rtmo_ros)')
    num_threads: int = _param(0, 'CPU threads of the ONNX Runtime / torch backends; 0 = engine '
                                 'default', low=0, high=256)
    score_thr: float = _param(0.1, 'minimum instance score of a published person (runtime)',
                              low=0.0, high=1.0)
    nms_thr: float = _param(0.65, 'box IoU above which the lower-scored person is suppressed '
                                  '(runtime)', low=0.0, high=1.0)
    max_persons: int = _param(0, 'keep at most this many persons per image, best first; '
                                 '0 = no limit (runtime)', low=0, high=1000)
    image_transport: str = _param('raw', "'raw' subscribes to image (sensor_msgs/Image), "
                                         "'compressed' to image/compressed (CompressedImage)",
                                  choices=('raw', 'compressed'))
    qos_reliability: str = _param('auto', 'reliability of the image subscription; auto = '
                                          'best effort until a publisher is seen, reliable '
                                          'while every publisher offers reliable',
                                  choices=('auto', 'best_effort', 'reliable'))
    qos_depth: int = _param(1, 'queue depth of the image subscription', low=1, high=100)
    max_image_pixels: int = _param(33_177_600, 'images with more pixels (width x height, read '
                                               'from the header before decoding) are refused '
                                               'as invalid; default 8K (runtime)',
                                   low=1, high=1_000_000_000)
    inference_timeout_s: float = _param(10.0, 'a frame running longer than this is reported '
                                              'as an ERROR on /diagnostics (runtime) [s]',
                                        low=0.1, high=3600.0)
    tracking: bool = _param(True, 'give every person a stable track_id (ByteTrack-style, lost '
                                  'tracks live track_buffer_s of header time)')
    track_new_thr: float = _param(0.5, 'minimum score of a detection that starts a new track',
                                  low=0.0, high=1.0)
    track_buffer_s: float = _param(1.0, 'header time a lost track is kept [s]', low=0.0,
                                   high=60.0)
    smoothing: bool = _param(True, 'One-Euro smoothing of each tracked keypoint and its depth '
                                   '(needs tracking); false publishes the raw keypoints')
    smoothing_min_cutoff: float = _param(1.0, 'One-Euro cutoff of a still keypoint [Hz]; lower '
                                              'is smoother', low=1e-3, high=100.0)
    smoothing_beta: float = _param(10.0, 'One-Euro cutoff rise per body height/s of keypoint '
                                         'speed; higher follows fast motion with less lag',
                                   low=0.0, high=1000.0)
    smoothing_d_cutoff: float = _param(1.0, 'One-Euro cutoff of the speed estimate [Hz]',
                                       low=1e-3, high=100.0)
    use_depth: bool = _param(False, 'subscribe to depth (aligned 16UC1 mm / 32FC1 m) and '
                                    'camera_info and publish keypoints_3d, position, velocity')
    depth_sync_tolerance_s: float = _param(0.02, 'largest header-stamp difference between an '
                                                 'image and its depth image [s]',
                                           low=0.0, high=1.0)
    depth_min: float = _param(0.2, 'depth readings below are ignored [m]', low=0.0, high=100.0)
    depth_max: float = _param(10.0, 'depth readings above are ignored [m]', low=0.01,
                              high=1000.0)
    depth_keypoint_thr: float = _param(0.3, 'keypoints scoring below get no 3D point',
                                       low=0.0, high=1.0)
    image_rectified: bool = _param(False, 'the image is rectified: back-project with '
                                          "camera_info's P; false: undistort with K and D")
    publish_markers: bool = _param(True, 'publish visualization_msgs/MarkerArray on markers')
    publish_annotated_image: bool = _param(True, 'publish image_annotated (drawn only while '
                                                 'someone subscribes)')
    publish_detections: bool = _param(True, 'publish vision_msgs/Detection2DArray on '
                                            'detections when vision_msgs is installed')
    autostart: bool = _param(False, 'configure and activate the node by itself at start-up '
                                    '(the launch file sets it true)')
    autostart_failure: str = _param('retry', 'when the autostart configure fails: retry with '
                                             'back-off (1 s doubling up to '
                                             'autostart_retry_max_s) or exit with code 1 (for '
                                             'launch respawn / systemd)',
                                    choices=('retry', 'exit'))
    autostart_retry_max_s: float = _param(60.0, 'longest wait between two autostart configure '
                                                'attempts [s]', low=1.0, high=3600.0)
    marker_scale: float = _param(0.002, 'marker size of one image pixel [m/px] on the marker '
                                        'plane', low=1e-6, high=1.0)
    marker_depth: float = _param(1.0, 'distance of the marker plane along the optical axis '
                                      '(z of the camera optical frame) [m]', low=0.0, high=100.0)
    marker_line_width: float = _param(0.01, 'bone line width [m]', low=1e-4, high=1.0)
    marker_joint_size: float = _param(0.02, 'joint sphere diameter [m]', low=1e-4, high=1.0)
    marker_keypoint_thr: float = _param(0.3, 'joints with a lower score (and their bones) are '
                                             'not drawn as markers', low=0.0, high=1.0)
    annotate_keypoint_thr: float = _param(0.3, 'joints with a lower score (and their bones) '
                                               'are not drawn on image_annotated',
                                          low=0.0, high=1.0)
    diagnostics_period: float = _param(1.0, 'period of the /diagnostics status (steady '
                                            'clock, read at start-up) [s]',
                                       low=0.1, high=60.0)

    @classmethod
    def from_node(cls, node):
        """Read every declared parameter of ``node`` into a new instance."""
        values = {f.name: node.get_parameter(f.name).value for f in fields(cls)}
        values['cameras'] = camera_list(values['cameras'])
        return cls(**values)

    def perception(self):
        """The :class:`rtmo_ros.perception.PerceptionConfig` these parameters ask for."""
        from rtmo_ros.perception import PerceptionConfig
        from rtmo_ros.perception.depth import DepthConfig

        depth = DepthConfig(depth_min=self.depth_min, depth_max=self.depth_max,
                            keypoint_thr=self.depth_keypoint_thr)
        return PerceptionConfig(tracking=self.tracking, smoothing=self.smoothing,
                                track_new_thr=self.track_new_thr,
                                track_buffer_s=self.track_buffer_s,
                                smoothing_min_cutoff=self.smoothing_min_cutoff,
                                smoothing_beta=self.smoothing_beta,
                                smoothing_d_cutoff=self.smoothing_d_cutoff, depth=depth)

    def updated(self, changes):
        """Return a copy with ``changes`` ({name: value}) applied."""
        return replace(self, **changes)


def descriptor(f):
    """Return the ``ParameterDescriptor`` of one dataclass field (description and range)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = ParameterDescriptor(name=f.name, description=f.metadata['description'])
    if f.name == 'cameras':  # an empty list has no type of its own: [] and ['a'] both valid
        desc.dynamic_typing = True
    choices = f.metadata['choices']
    if choices:
        desc.additional_constraints = 'one of: ' + ', '.join(choices)
    rng = f.metadata['range']
    if rng is not None and f.type in (float, 'float'):
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(rng[0]), to_value=float(rng[1]), step=0.0)]
    elif rng is not None:
        desc.integer_range = [IntegerRange(from_value=rng[0], to_value=rng[1], step=1)]
    return desc


def declare(node):
    """Declare every parameter on ``node`` (overrides from --ros-args / YAML apply)."""
    node.declare_parameters('', [(f.name, default_of(f), descriptor(f))
                                 for f in fields(NodeParams)])


def camera_list(value):
    """``cameras`` as a list of names: YAML ``[]`` arrives unset (None), and a single name or
    a comma-separated string (``-p cameras:=cam0,cam1`` on some shells) is accepted too."""
    if value is None or value == '':
        return []
    if isinstance(value, str):
        return [name.strip() for name in value.split(',')]
    return list(value)


def check(name, value):
    """Return why ``value`` is not allowed for parameter ``name``, or None when it is.

    Covers the string choices and the numeric ranges (rclpy checks the ranges too, this keeps
    one message format for both).
    """
    spec = {f.name: f for f in fields(NodeParams)}.get(name)
    if spec is None:
        return None
    if name == 'cameras':
        return check_cameras(value)
    choices, rng = spec.metadata['choices'], spec.metadata['range']
    if choices and value not in choices:
        return f"{name} must be one of {', '.join(choices)}; got {value!r}"
    if rng is not None and isinstance(value, (int, float)) and not rng[0] <= value <= rng[1]:
        return f'{name} must lie in [{rng[0]}, {rng[1]}]; got {value}'
    return None


def check_cameras(value):
    """Why a ``cameras`` value is refused, or None."""
    if not isinstance(value, (type(None), str, list, tuple)) or (
            isinstance(value, (list, tuple)) and not all(isinstance(v, str) for v in value)):
        return f'cameras must be a list of names, e.g. [cam0, cam1]; got {value!r}'
    names = camera_list(value)
    bad = [n for n in names if not CAMERA_NAME.match(n)]
    if bad:
        return (f'cameras: {bad} are not valid names (letters, digits and underscores, not '
                'starting with a digit, / between namespaces)')
    if len(set(names)) != len(names):
        return f'cameras: a name is listed twice in {names}'
    return None


def problems(params):
    """Return the reasons why a :class:`NodeParams` holds disallowed values (empty: valid)."""
    reasons = [check(f.name, getattr(params, f.name)) for f in fields(NodeParams)]
    if params.depth_min >= params.depth_max:
        reasons.append(f'depth_min ({params.depth_min}) must be below depth_max '
                       f'({params.depth_max})')
    return [r for r in reasons if r is not None]


def names():
    """Return the parameter names in declaration order."""
    return [f.name for f in fields(NodeParams)]
