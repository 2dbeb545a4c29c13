"""person_array_cdr writes the bytes rclpy's serializer writes for poses_to_person_array.

Fast CDR leaves its padding bytes uninitialised (they hold whatever the buffer held), so the
comparison with ``serialize_message`` is on every data byte; the padding positions come from
an independent reference writer driven by the message's own field list, which also pins the
padding of person_array_cdr to zero. Over real DDS, a plain and a lifecycle publisher deliver
the bytes as a PersonArray.
"""
import math
import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from rtmo_msgs.msg import PersonArray  # noqa: E402
from rtmo_ros.cdr import person_array_cdr  # noqa: E402
from rtmo_ros.conversions import person_array_bytes, poses_to_person_array  # noqa: E402
from rtmo_ros.engine.poses import Poses  # noqa: E402
from rtmo_ros.perception.camera import PinholeCamera  # noqa: E402
from rtmo_ros.perception.pipeline import PersonPipeline, Tracked  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PRIMITIVES = {'float': '<f', 'double': '<d', 'int32': '<i', 'uint32': '<I'}
SPECIAL = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, -1e6, 3e38, -3e38, 1e-40])
NAMES = ['', 'a', 'ab', 'abc', 'coco17', 'crowdpose14']
FRAMES = ['', 'camera_optical', 'x' * 301, 'kamera_ø_相机_📷']


# --- an independent CDR writer: walks the message by its field list ---------------------------

def reference_cdr(msg):
    """(bytes, padding positions) of ``msg`` in XCDR1 little-endian, padding zeroed."""
    out, pads = bytearray(), []
    _write(msg, out, pads)
    return b'\x00\x01\x00\x00' + bytes(out), np.array(pads, np.int64) + 4


def _write(msg, out, pads):
    for name, kind in msg.get_fields_and_field_types().items():
        value = getattr(msg, name)
        if kind.startswith('sequence<'):
            _put(out, pads, '<I', len(value))
            for item in value:
                _write(item, out, pads)
        else:
            _write_one(kind, value, out, pads)


def _write_one(kind, value, out, pads):
    if kind in PRIMITIVES:
        _put(out, pads, PRIMITIVES[kind], value)
    elif kind == 'string':
        data = value.encode('utf-8').split(b'\0', 1)[0] + b'\0'  # C strings end at a NUL
        _put(out, pads, '<I', len(data))
        out += data
    else:  # a nested message
        _write(value, out, pads)


def _put(out, pads, fmt, value):
    size = struct.calcsize(fmt)
    pad = -len(out) % size  # aligned to its own size, from the end of the encapsulation
    pads.extend(range(len(out), len(out) + pad))
    out += bytes(pad) + struct.pack(fmt, value)


# --- inputs ------------------------------------------------------------------------------------

def header(frame_id='camera_optical', sec=1700000000, nanosec=123456789):
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def wild(rng, shape, dtype=np.float32, scale=1000.0):
    """Random values, a fifth of them NaN, inf, signed zero, huge, tiny or subnormal."""
    values = rng.normal(0.0, scale, shape)
    special = rng.random(shape) < 0.2
    values[special] = rng.choice(SPECIAL, special.sum())
    with np.errstate(over='ignore'):
        return values.astype(dtype)


def make_poses(rng, n, k):
    return Poses(wild(rng, (n, 4)), wild(rng, n, scale=1.0), wild(rng, (n, k, 2)),
                 wild(rng, (n, k), scale=1.0))


def make_tracked(rng, n, k):
    ids = rng.integers(-1, 2**31 - 1, n)
    return Tracked(ids, wild(rng, (n, k, 2)), wild(rng, (n, k, 3), np.float64, 10.0),
                   wild(rng, (n, 3), np.float64, 10.0), wild(rng, (n, 3), np.float64), False)


def assert_like_rclpy(poses, hdr, skeleton, tracked=None):
    """person_array_cdr == reference writer exactly, == serialize_message on every data byte."""
    msg = poses_to_person_array(poses, hdr, skeleton, tracked)
    ours = person_array_cdr(poses, hdr, skeleton, tracked)
    reference, pads = reference_cdr(msg)
    assert type(ours) is bytes and ours == reference
    rclpy_bytes = np.frombuffer(serialize_message(msg), np.uint8)
    assert len(rclpy_bytes) == len(ours)
    data = np.ones(len(ours), bool)
    data[pads] = False
    mismatch = np.flatnonzero(data & (rclpy_bytes != np.frombuffer(ours, np.uint8)))
    assert mismatch.size == 0, f'data bytes differ at {mismatch[:10]}'
    return msg, ours


# --- byte equality -----------------------------------------------------------------------------

@pytest.mark.parametrize('k', [17, 14])
@pytest.mark.parametrize('n', [0, 1, 2, 50])
@pytest.mark.parametrize('is_tracked', [False, True])
def test_bytes_match_serialize_message(n, k, is_tracked):
    rng = np.random.default_rng(n * 100 + k)
    tracked = make_tracked(rng, n, k) if is_tracked else None
    assert_like_rclpy(make_poses(rng, n, k), header(), 'coco17', tracked)


@pytest.mark.parametrize('k', [17, 14])
@pytest.mark.parametrize('frame_id', FRAMES)
def test_string_lengths_shift_every_alignment(frame_id, k):
    # the string lengths decide whether the first person, and its Points, start 8-aligned
    rng = np.random.default_rng(k)
    for skeleton in NAMES:
        poses, tracked = make_poses(rng, 3, k), make_tracked(rng, 3, k)
        assert_like_rclpy(poses, header(frame_id, -7, 2**32 - 1), skeleton, tracked)
        assert_like_rclpy(poses, header(frame_id, 0, 0), skeleton)


def test_a_real_pipeline_with_depth_gives_the_same_bytes():
    camera = PinholeCamera.from_fields(640, 480, [600.0, 0, 320, 0, 600, 240, 0, 0, 1],
                                       [0.0] * 5, [600.0, 0, 320, 0, 0, 600, 240, 0, 0, 0, 1, 0])
    rng, pipeline = np.random.default_rng(3), PersonPipeline()
    base = rng.uniform([50, 50], [590, 430], (4, 17, 2))
    for frame in range(4):  # a few frames: tracks confirmed, velocities known
        keypoints = (base + 3.0 * frame).astype(np.float32)
        boxes = np.concatenate([keypoints.min(1) - 5, keypoints.max(1) + 5], 1)
        poses = Poses(boxes.astype(np.float32), np.array([0.9, 0.8, 0.7, 0.3], np.float32),
                      keypoints, np.full((4, 17), 0.9, np.float32))
        depth = np.full((480, 640), 2.0 + 0.1 * frame, np.float32)
        tracked = pipeline.update(poses, 100.0 + frame / 30, depth, camera)
        assert_like_rclpy(poses, header(nanosec=frame), 'coco17', tracked)
    assert (tracked.track_ids[:3] >= 0).all() and np.isfinite(tracked.keypoints_3d).any()
    assert np.isfinite(tracked.velocity).any()


def quiet_nans(values):
    # arithmetic only makes quiet NaNs; the message path's float32 -> float -> float32
    # round trip would quiet a signalling one (person_array_cdr copies it as it is)
    return values.astype(np.float64).astype(values.dtype)


def float_arrays(shape, width=32):
    elements = st.floats(width=width, allow_nan=True, allow_infinity=True)
    return hnp.arrays(np.float32 if width == 32 else np.float64, shape, elements=elements)


@st.composite
def cases(draw):
    n, k = draw(st.integers(0, 6)), draw(st.integers(0, 20))
    poses = Poses(*(quiet_nans(draw(float_arrays(s))) for s in ((n, 4), (n,), (n, k, 2),
                                                               (n, k))))
    tracked = None
    if draw(st.booleans()):
        ids = draw(hnp.arrays(np.int64, n, elements=st.integers(-2**31, 2**31 - 1)))
        tracked = Tracked(ids, quiet_nans(draw(float_arrays((n, k, 2)))),
                          draw(float_arrays((n, k, 3), 64)), draw(float_arrays((n, 3), 64)),
                          draw(float_arrays((n, 3), 64)), False)
    hdr = header(draw(st.text(max_size=40)), draw(st.integers(-2**31, 2**31 - 1)),
                 draw(st.integers(0, 2**32 - 1)))
    return poses, hdr, draw(st.text(max_size=20)), tracked


@FUZZ
@given(cases())
def test_fuzzed_sizes_strings_and_values_match(case):
    assert_like_rclpy(*case)


def test_out_of_range_track_ids_are_refused_like_the_message_setter():
    rng = np.random.default_rng(0)
    tracked = make_tracked(rng, 2, 17)
    tracked.track_ids[1] = 2**31
    with pytest.raises(ValueError, match='int32'):
        person_array_cdr(make_poses(rng, 2, 17), header(), 'coco17', tracked)


def test_the_conversions_alias_is_the_same_function():
    rng = np.random.default_rng(1)
    poses = make_poses(rng, 2, 17)
    assert person_array_bytes(poses, header(), 'coco17') == person_array_cdr(poses, header(),
                                                                             'coco17')


# --- round trip --------------------------------------------------------------------------------

def leaves(msg, path=''):
    """Every primitive of ``msg`` as (path, value), in field order."""
    for name, kind in msg.get_fields_and_field_types().items():
        value, here = getattr(msg, name), f'{path}.{name}'
        if kind.startswith('sequence<'):
            yield f'{here}.len', len(value)
            for i, item in enumerate(value):
                yield from leaves(item, f'{here}[{i}]')
        elif kind in PRIMITIVES or kind == 'string':
            yield here, value
        else:
            yield from leaves(value, here)


def same(a, b):
    if isinstance(a, float):  # NaN equals NaN here, and the bits must match (signed zero)
        return struct.pack('<d', a) == struct.pack('<d', b) or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.mark.parametrize('is_tracked', [False, True])
def test_deserialized_bytes_equal_the_built_message_field_by_field(is_tracked):
    rng = np.random.default_rng(5)
    tracked = make_tracked(rng, 50, 17) if is_tracked else None
    msg, data = assert_like_rclpy(make_poses(rng, 50, 17), header('kamera_ø'), 'coco17',
                                  tracked)
    got, want = list(leaves(deserialize_message(data, PersonArray))), list(leaves(msg))
    assert len(got) == len(want) == 5 + 50 * (5 + 1 + 17 * 3 + 1 + 1 + 17 * 3 + 6)
    bad = [(p, a, b) for (p, a), (q, b) in zip(got, want) if p != q or not same(a, b)]
    assert not bad, bad[:5]


# --- over real DDS -----------------------------------------------------------------------------

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture
def context():
    # own context and executor: no global rclpy state shared with other tests; DDS stays on
    # loopback in this run's domain (conftest.py)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def deliver(context, node, publisher, data):
    """Publish ``data`` until a typed and a raw subscriber both got it; return what they got."""
    typed, raw = [], []
    node.create_subscription(PersonArray, 'cdr_people', typed.append, RELIABLE)
    node.create_subscription(PersonArray, 'cdr_people', raw.append, RELIABLE, raw=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        assert spin_until(executor, lambda: publisher.get_subscription_count() >= 2)
        publisher.publish(data)
        assert spin_until(executor, lambda: typed and raw)
    finally:
        executor.shutdown()
    return typed[0], raw[0]


def spin_until(executor, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def check_delivery(msg, data, typed, raw):
    assert raw == data  # the bytes travel untouched, zero padding included
    assert all(p == q and same(a, b) for (p, a), (q, b) in zip(leaves(typed), leaves(msg)))
    assert len(typed.persons) == len(msg.persons) == 3


def test_a_plain_publisher_sends_the_bytes_as_a_person_array(context):
    rng = np.random.default_rng(8)
    poses, tracked = make_poses(rng, 3, 17), make_tracked(rng, 3, 17)
    msg, data = assert_like_rclpy(poses, header(), 'coco17', tracked)
    node = rclpy.create_node('cdr_test', context=context)
    try:
        pub = node.create_publisher(PersonArray, 'cdr_people', RELIABLE)
        check_delivery(msg, data, *deliver(context, node, pub, data))
    finally:
        node.destroy_node()


def test_a_lifecycle_publisher_sends_the_bytes_once_active(context):
    rng = np.random.default_rng(9)
    msg, data = assert_like_rclpy(make_poses(rng, 3, 14), header('cam'), 'crowdpose14')
    node = LifecycleNode('cdr_lifecycle_test', context=context)
    try:
        pub = node.create_lifecycle_publisher(PersonArray, 'cdr_people', RELIABLE)
        node.trigger_configure()
        node.trigger_activate()  # an inactive lifecycle publisher drops what it is given
        check_delivery(msg, data, *deliver(context, node, pub, data))
    finally:
        node.destroy_node()


# --- reading images from their bytes (the node's raw image subscriptions) --------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from rtmo_ros.image_conversion import (  # noqa: E402
    ImageError,
    compressed_to_bgr,
    image_to_bgr,
    serialized_to_bgr,
)

IMAGE_ENCODINGS = ('bgr8', 'rgb8', 'mono8', 'mono16', 'bgra8', 'yuv422', 'bayer_rggb8', '16UC1')


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 9), st.integers(1, 9), st.sampled_from(IMAGE_ENCODINGS),
       st.integers(0, 5), st.integers(-2**31, 2**31 - 1), st.integers(0, 2**32 - 1),
       st.text(max_size=20), st.integers(0, 1), st.binary(max_size=8))
def test_serialized_images_read_like_their_messages(h, w, encoding, pad, sec, nanosec,
                                                    frame_id, bigendian, tail):
    """Fields, header and pixels read from the bytes equal rclpy's message, and a malformed
    header is refused with the same ImageError text either way."""
    frame_id = frame_id.replace('\x00', '')
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian)
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame_id, sec, nanosec
    bpp = {'mono16': 2, '16UC1': 2, 'bgra8': 4, 'yuv422': 2, 'mono8': 1,
           'bayer_rggb8': 1}.get(encoding, 3)
    msg.step = w * bpp + pad
    msg.data = bytes(np.random.default_rng(h * 10 + w).integers(0, 256, msg.step * h,
                                                                 np.uint8)) + tail
    data = serialize_message(msg)
    try:
        expected = image_to_bgr(msg)
    except ImageError as err:
        with pytest.raises(ImageError) as got:
            serialized_to_bgr(data)
        assert str(got.value) == str(err)
        return
    header, image = serialized_to_bgr(data)
    assert header == msg.header
    np.testing.assert_array_equal(image, expected)


def test_serialized_compressed_images_read_like_their_messages():
    import cv2
    ok, jpeg = cv2.imencode('.jpg', np.full((24, 32, 3), 90, np.uint8))
    msg = CompressedImage(format='jpeg', data=jpeg.tobytes())
    msg.header.frame_id, msg.header.stamp.sec = 'cam', 3
    header, image = serialized_to_bgr(serialize_message(msg), compressed=True)
    assert header == msg.header
    np.testing.assert_array_equal(image, compressed_to_bgr(msg))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=200), st.booleans())
def test_any_bytes_are_an_image_or_an_image_error(data, compressed):
    try:
        serialized_to_bgr(data, compressed)
    except ImageError:
        pass


def test_truncated_image_bytes_are_refused_saying_so():
    msg = Image(height=2, width=2, encoding='mono8', step=2, data=bytes(4))
    data = serialize_message(msg)
    for cut in range(len(data) - 1):
        with pytest.raises(ImageError, match='cannot be read|truncated|step|zero size'):
            serialized_to_bgr(data[:cut])
