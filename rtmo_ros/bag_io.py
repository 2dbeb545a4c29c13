"""Rosbag2 reading and writing with ``rosbags`` (pure Python: no rosbag2_py, no ROS install).

Reads image topics (``sensor_msgs/Image``, ``sensor_msgs/CompressedImage``) from sqlite3 and
mcap rosbag2 bags, writes image bags and ``rtmo_msgs/PersonArray`` bags. The ``rtmo_msgs``
types are registered from their ``.msg`` files, so a bag written here has the exact message
definitions (and type hashes) that ``ros2 bag`` records from the node. Depth images (REP 118:
``16UC1`` millimetres or ``32FC1`` metres) and ``sensor_msgs/CameraInfo`` are written and read
back matched to their colour image by header stamp (:func:`read_synced`); every image, colour or
depth, is decoded by the node's own :mod:`rtmo_ros.image_conversion`.
"""
import collections
from dataclasses import dataclass
import functools
import os
import pathlib
import struct
from typing import Optional

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from rtmo_ros import image_conversion
from rtmo_ros.engine.poses import Poses
from rtmo_ros.image_conversion import ImageError
from rtmo_ros.perception.stamp_sync import stamp_ns  # noqa: F401 - bag_io.stamp_ns, public

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
PERSON_ARRAY = 'rtmo_msgs/msg/PersonArray'
IMAGE_TYPES = (IMAGE, COMPRESSED)
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
# read_synced default: 20 ms, the node's depth_sync_tolerance_s default (0.02 s)
SYNC_TOLERANCE_NS = 20_000_000
SYNC_MAX_PENDING = 64  # colour frames read_synced holds back at most while awaiting depth
RTMO_MSGS = ('Keypoint2D', 'Person', 'PersonArray', 'SkeletonInfo')
# rosbag2 metadata version 8 is what Jazzy writes; Jazzy and Kilted both read it.
BAG_VERSION = 8
STORAGES = {'sqlite3': StoragePlugin.SQLITE3, 'mcap': StoragePlugin.MCAP}


class BagError(Exception):
    """A bag, topic or annotation file that cannot be used; the message says why and the fix."""


@dataclass
class Frame:
    """One image message of a bag.

    stamp_ns: header stamp [ns] (capture time, the key that matches ground truth).
    log_ns:   time the recorder received it [ns] (the bag's own timestamp, used for replay).
    frame_id: header frame id (the camera frame).
    msgtype:  ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage``.
    rawdata:  the serialized CDR message, as recorded (republished unchanged online).
    message:  the deserialized rosbags message (None when its CDR bytes cannot be read).
    index:    position of the message on its topic, in recording order (0-based).
    """

    stamp_ns: int
    log_ns: int
    frame_id: str
    msgtype: str
    rawdata: bytes
    message: object
    index: int = 0

    def decode(self, max_pixels=None):
        """Return the image as (H, W, 3) uint8 BGR; raise ImageError when it is undecodable.

        ``max_pixels``: the node's ``max_image_pixels`` cap when it is not the default.
        """
        if self.message is None:
            raise ImageError(f'image at stamp {self.stamp_ns} ns: its serialized message '
                             'cannot be read; the recording is corrupt')
        return image_to_bgr(self.message, max_pixels)


def msg_dir():
    """Folder holding the ``rtmo_msgs`` ``.msg`` files: the source tree, else the install."""
    source = pathlib.Path(__file__).resolve().parents[1] / 'rtmo_msgs' / 'msg'
    if (source / 'PersonArray.msg').is_file():
        return source
    from ament_index_python.packages import get_package_share_directory
    return pathlib.Path(get_package_share_directory('rtmo_msgs')) / 'msg'


@functools.lru_cache(maxsize=1)
def typestore():
    """Return the ROS 2 Kilted typestore with the ``rtmo_msgs`` types registered."""
    store = get_typestore(Stores.ROS2_KILTED)
    folder = msg_dir()
    types = {}
    for name in RTMO_MSGS:
        text = (folder / f'{name}.msg').read_text()
        types.update(get_types_from_msg(text, f'rtmo_msgs/msg/{name}'))
    store.register(types)
    return store


def make_header(ns, frame_id):
    """Return a rosbags ``std_msgs/Header`` for stamp ``ns`` [ns]."""
    types = typestore().types
    stamp = types['builtin_interfaces/msg/Time'](sec=ns // 1_000_000_000,
                                                nanosec=ns % 1_000_000_000)
    return types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)


# -- reading -------------------------------------------------------------------------------------
def open_bag(path):
    """Open a rosbag2 (directory with metadata.yaml, or a .db3/.mcap file); return the Reader."""
    path = pathlib.Path(path)
    fix = 'pass a rosbag2 directory (with metadata.yaml) or a .db3/.mcap file'
    if not path.exists():
        raise BagError(f'bag {path} does not exist; {fix}')
    if path.is_dir() and not (path / 'metadata.yaml').is_file():
        raise BagError(f'bag directory {path} has no metadata.yaml; {fix}')
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:  # rosbags raises ReaderError, FileNotFoundError, sqlite errors...
        reason = str(exc).rstrip('.') or type(exc).__name__
        raise BagError(f'bag {path} is not a readable rosbag2 ({reason}); {fix}') from None
    return reader


def image_topics(reader):
    """Return {topic: msgtype} of the bag's image topics, sorted by topic."""
    return {c.topic: c.msgtype for c in sorted(reader.connections, key=lambda c: c.topic)
            if c.msgtype in IMAGE_TYPES}


def choose_topic(reader, topic=None):
    """Return the image topic to read: ``topic`` (checked) or the only image topic of the bag."""
    topics = image_topics(reader)
    listing = ', '.join(f'{t} ({m.rsplit("/", 1)[-1]})' for t, m in topics.items()) or 'none'
    if topic is not None:
        if topic not in topics:
            raise BagError(f'topic {topic} is not an image topic of bag {reader.path} '
                           f'(image topics: {listing}); pass one of them with --topic')
        return topic
    colour = [t for t in topics if not is_depth_topic(t)]
    if len(topics) > 1 and len(colour) == 1:
        return colour[0]  # an RGB-D bag: the one image topic that is not a depth image
    if len(topics) != 1:
        what = 'has no image topic' if not topics else 'has several image topics'
        raise BagError(f'bag {reader.path} {what} (image topics: {listing}); '
                       'pick one with --topic')
    return next(iter(topics))


def is_depth_topic(topic):
    """True for a topic named as a depth image: a name segment containing ``depth``.

    Covers the usual drivers (``/camera/depth/image_raw``,
    ``/camera/aligned_depth_to_color/image_raw``, ``/depth_to_rgb/image_raw``). Only
    :func:`choose_topic` uses it, to pick the colour topic of an RGB-D bag by itself.
    """
    return any('depth' in part for part in topic.split('/'))


def read_frames(reader, topic):
    """Yield every :class:`Frame` of ``topic`` in recording order.

    A message whose CDR bytes do not deserialize is still yielded (``message`` None, stamp read
    from the raw header when possible, else -1): its :meth:`Frame.decode` raises ImageError, so
    it is skipped and counted like any undecodable image.
    """
    store = typestore()
    connections = [c for c in reader.connections if c.topic == topic]
    messages = reader.messages(connections=connections)
    for index, (connection, log_ns, rawdata) in enumerate(messages):
        try:
            msg = store.deserialize_cdr(rawdata, connection.msgtype)
        except Exception:  # noqa: BLE001 - rosbags raises several types for corrupt CDR
            yield Frame(_raw_stamp(rawdata), int(log_ns), '', connection.msgtype,
                        bytes(rawdata), None, index)
            continue
        yield Frame(stamp_ns(msg.header), int(log_ns), msg.header.frame_id, connection.msgtype,
                    bytes(rawdata), msg, index)


def read_raw(reader, topic):
    """Yield (index, log_ns, header stamp ns, CDR bytes) of ``topic``, without deserializing.

    Same order and indices as :func:`read_frames`; the online replay publishes these bytes.
    """
    connections = [c for c in reader.connections if c.topic == topic]
    messages = reader.messages(connections=connections)
    for index, (_, log_ns, rawdata) in enumerate(messages):
        yield index, int(log_ns), _raw_stamp(rawdata), bytes(rawdata)


def _raw_stamp(rawdata):
    """cdr_stamp, or -1 for a message too short to hold a header."""
    try:
        return cdr_stamp(rawdata)
    except (struct.error, IndexError):
        return -1


def cdr_stamp(rawdata):
    """Header stamp [ns] of a serialized message whose first field is a ``std_msgs/Header``.

    The stamp (int32 sec, uint32 nanosec) follows the 4-byte CDR encapsulation header, whose
    byte 1 is 1 for little-endian data. Reads a stamp without deserializing a whole image.
    """
    order = '<' if rawdata[1] == 1 else '>'
    sec, nanosec = struct.unpack_from(order + 'iI', rawdata, 4)
    return sec * 1_000_000_000 + nanosec


def read_stamps(reader, topic):
    """Return the header stamps [ns] of ``topic`` in bag order, without decoding the images."""
    return [stamp for _, _, stamp, _ in read_raw(reader, topic)]


def count_messages(reader, topic):
    """Number of messages on ``topic`` according to the bag's metadata."""
    return sum(c.msgcount for c in reader.connections if c.topic == topic)


# -- images --------------------------------------------------------------------------------------
def image_to_bgr(msg, max_pixels=None):
    """Decode a rosbags ``Image`` or ``CompressedImage`` into (H, W, 3) uint8 BGR.

    The node's own conversion (:mod:`rtmo_ros.image_conversion`) does the work: rosbags
    messages carry the same fields as rclpy's, so a bag is decoded exactly as the node would,
    and an image the node would skip raises the node's ImageError (message prefixed with the
    stamp). ``max_pixels``: size cap (the node's ``max_image_pixels``); None keeps the default.
    """
    convert = (image_conversion.compressed_to_bgr if hasattr(msg, 'format')
               else image_conversion.image_to_bgr)
    kwargs = {} if max_pixels is None else {'max_pixels': int(max_pixels)}
    try:
        return convert(msg, **kwargs)
    except ImageError as exc:
        raise ImageError(f'image at stamp {stamp_ns(msg.header)} ns: {exc}') from None


def bgr_to_image_msg(image_bgr, ns, frame_id):
    """Return a rosbags ``sensor_msgs/Image`` (bgr8) of an (H, W, 3) uint8 BGR image."""
    height, width = image_bgr.shape[:2]
    return typestore().types[IMAGE](
        header=make_header(ns, frame_id), height=height, width=width, encoding='bgr8',
        is_bigendian=0, step=width * 3,
        data=np.ascontiguousarray(image_bgr, np.uint8).reshape(-1))


def bgr_to_compressed_msg(image_bgr, ns, frame_id, quality=90):
    """Return a rosbags ``sensor_msgs/CompressedImage`` (JPEG) of a BGR image."""
    ok, data = cv2.imencode('.jpg', image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BagError('OpenCV could not JPEG-encode the image')
    return typestore().types[COMPRESSED](header=make_header(ns, frame_id), format='jpeg',
                                         data=data.reshape(-1))


# -- depth images and camera info ---------------------------------------------------------------
def depth_to_image_msg(depth_m, ns, frame_id):
    """Return a rosbags ``sensor_msgs/Image`` (16UC1, millimetres) of an (H, W) depth in metres.

    Rounded to the millimetre; 0 (REP 118: no depth) where the depth is NaN, <= 0 or beyond
    65.535 m. Little-endian, rows unpadded.
    """
    depth = np.asarray(depth_m, np.float64)
    if depth.ndim != 2:
        raise BagError(f'a depth image must be (H, W), got shape {depth.shape}')
    with np.errstate(invalid='ignore'):
        mm = np.round(depth * 1000.0)
        valid = np.isfinite(mm) & (mm > 0) & (mm <= 65535)
    data = np.where(valid, mm, 0).astype('<u2')
    height, width = data.shape
    return typestore().types[IMAGE](
        header=make_header(ns, frame_id), height=height, width=width, encoding='16UC1',
        is_bigendian=0, step=width * 2, data=data.view(np.uint8).reshape(-1))


def camera_info_msg(camera_matrix, width, height, ns, frame_id):
    """Return a rosbags ``sensor_msgs/CameraInfo`` of an undistorted pinhole camera.

    ``camera_matrix``: K (3, 3) [px]. D = five zeros (``plumb_bob``), R = identity,
    P = [K | 0] (a monocular camera), no binning, full-image ROI.
    """
    types = typestore().types
    k = np.asarray(camera_matrix, np.float64).reshape(3, 3)
    return types[CAMERA_INFO](
        header=make_header(ns, frame_id), height=int(height), width=int(width),
        distortion_model='plumb_bob', d=np.zeros(5), k=k.reshape(-1),
        r=np.eye(3).reshape(-1), p=np.hstack([k, np.zeros((3, 1))]).reshape(-1),
        binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                       width=0, do_rectify=False))


def camera_matrix(info):
    """K (3, 3) float64 [px] of a deserialized ``CameraInfo``."""
    return np.asarray(info.k, np.float64).reshape(3, 3)


def depth_image_to_metres(msg, max_pixels=None):
    """(H, W) float32 metres of a deserialized depth ``Image``, NaN where there is no reading.

    The node's decoding (:func:`rtmo_ros.image_conversion.depth_to_metres`: REP 118 16UC1 [mm]
    or 32FC1 [m], header checked like a colour image's); an unusable message raises its
    ImageError, prefixed with the stamp. ``max_pixels``: the node's ``max_image_pixels``.
    """
    kwargs = {} if max_pixels is None else {'max_pixels': int(max_pixels)}
    try:
        return image_conversion.depth_to_metres(msg, **kwargs)
    except ImageError as exc:
        raise ImageError(f'depth image at stamp {stamp_ns(msg.header)} ns: {exc}') from None


@dataclass
class SyncedFrame:
    """A colour image with the depth image and camera info of the same header stamp.

    frame:          the colour image message, as :func:`read_frames` yields it.
    depth_m:        (H, W) float32 metres, NaN where no reading (decoded as the node decodes
                    it), or None: no depth message within the tolerance, one that does not
                    decode (``depth_error``), or ``decode=False``.
    depth_encoding: ``encoding`` of the matched depth message (``16UC1`` / ``32FC1``) or None.
    depth_stamp_ns: header stamp of the matched depth message [ns] or None.
    depth_frame_id: its header frame id, or None (not decoded).
    depth_raw:      its serialized CDR bytes, as recorded (republished by the online replay).
    camera_info:    the matched deserialized ``CameraInfo`` or None.
    info_stamp_ns:  its header stamp [ns] or None.
    info_raw:       its serialized CDR bytes or None.
    depth_error:    why a matched depth message gave no depth (ImageError text), else None.
    """

    frame: Frame
    depth_m: Optional[np.ndarray] = None
    depth_encoding: Optional[str] = None
    depth_stamp_ns: Optional[int] = None
    depth_frame_id: Optional[str] = None
    depth_raw: Optional[bytes] = None
    camera_info: object = None
    info_stamp_ns: Optional[int] = None
    info_raw: Optional[bytes] = None
    depth_error: Optional[str] = None


def read_synced(reader, image_topic, depth_topic, info_topic=None,
                tolerance_ns=SYNC_TOLERANCE_NS, decode=True, max_pixels=None):
    """Yield a :class:`SyncedFrame` for every message of ``image_topic``, in recording order.

    Each colour image gets the depth message (``depth_topic``) and the ``CameraInfo``
    (``info_topic``, optional) whose header stamp is nearest to its own, if within
    ``tolerance_ns`` (0: exact stamps only); else None. A depth message pairs with one image at
    most (the first that takes it), as in the node. ``decode``: turn the depth into metres
    (``depth_m``; ``max_pixels``: the node's size cap), False: keep its bytes only (the online
    replay republishes them). One pass over the bag: a colour frame is yielded once a later
    depth (and info) stamp has been read, or when ``SYNC_MAX_PENDING`` frames wait (a topic
    that stopped), so memory stays bounded. It assumes that each topic's header stamps increase
    in recording order, as a camera driver's do.
    """
    store = typestore()
    partners = {t: kind for t, kind in ((depth_topic, 'depth'), (info_topic, 'info')) if t}
    bag_topics = {c.topic for c in reader.connections}
    for topic in [image_topic, *partners]:
        if topic not in bag_topics:
            raise BagError(f'bag {reader.path} has no topic {topic} (topics: '
                           f'{", ".join(sorted(bag_topics)) or "none"})')
    connections = [c for c in reader.connections
                   if c.topic == image_topic or c.topic in partners]
    buffers = {kind: _StampBuffer() for kind in partners.values()}
    pending = collections.deque()
    count = 0
    for connection, log_ns, rawdata in reader.messages(connections=connections):
        if connection.topic == image_topic:
            pending.append(_to_frame(store, connection, log_ns, rawdata, count))
            count += 1
        else:
            buffers[partners[connection.topic]].add(_raw_stamp(rawdata), bytes(rawdata),
                                                    connection.msgtype)
        while pending and (len(pending) > SYNC_MAX_PENDING
                           or all(b.newest > pending[0].stamp_ns + tolerance_ns
                                  for b in buffers.values())):
            yield _synced(pending.popleft(), buffers, tolerance_ns, store, decode, max_pixels)
    while pending:
        yield _synced(pending.popleft(), buffers, tolerance_ns, store, decode, max_pixels)


class _StampBuffer:
    """Serialized messages of one topic by header stamp, for :func:`read_synced`."""

    def __init__(self):
        self.items = []  # (stamp ns, CDR bytes, msgtype)
        self.newest = -1

    def add(self, stamp, rawdata, msgtype):
        self.items.append((stamp, rawdata, msgtype))
        self.newest = max(self.newest, stamp)

    def nearest(self, stamp, tolerance_ns, take=False):
        """The item nearest to ``stamp`` within the tolerance, or None; drops older items.

        ``take``: remove the item returned, so that it pairs with one image at most.
        """
        self.items = [item for item in self.items if item[0] >= stamp - tolerance_ns]
        best = min(self.items, key=lambda item: abs(item[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > tolerance_ns:
            return None
        if take:
            self.items.remove(best)
        return best


def _to_frame(store, connection, log_ns, rawdata, index):
    """A :class:`Frame` as :func:`read_frames` builds it (message None for corrupt CDR)."""
    try:
        msg = store.deserialize_cdr(rawdata, connection.msgtype)
    except Exception:  # noqa: BLE001 - rosbags raises several types for corrupt CDR
        return Frame(_raw_stamp(rawdata), int(log_ns), '', connection.msgtype, bytes(rawdata),
                     None, index)
    return Frame(stamp_ns(msg.header), int(log_ns), msg.header.frame_id, connection.msgtype,
                 bytes(rawdata), msg, index)


def _synced(frame, buffers, tolerance_ns, store, decode=True, max_pixels=None):
    out = SyncedFrame(frame)
    # a depth image pairs with one colour image at most, as in the node (and message_filters'
    # synchronizer); camera info is not used up (the node keeps the latest)
    depth = (buffers['depth'].nearest(frame.stamp_ns, tolerance_ns, take=True)
             if 'depth' in buffers else None)
    if depth is not None:
        out.depth_stamp_ns, out.depth_raw = depth[0], depth[1]
        if decode:
            _decode_depth(out, store, *depth, max_pixels)
    info = buffers['info'].nearest(frame.stamp_ns, tolerance_ns) if 'info' in buffers else None
    if info is not None:
        try:
            out.camera_info = store.deserialize_cdr(info[1], info[2])
            out.info_stamp_ns, out.info_raw = info[0], info[1]
        except Exception:  # noqa: BLE001 - corrupt CDR: no camera info for this frame
            pass
    return out


def _decode_depth(out, store, stamp, rawdata, msgtype, max_pixels):
    """Fill the depth fields of SyncedFrame ``out`` from one serialized depth message."""
    try:
        msg = store.deserialize_cdr(rawdata, msgtype)
    except Exception as exc:  # noqa: BLE001 - corrupt CDR
        out.depth_error = f'depth message at stamp {stamp} ns is unreadable ({exc})'
        return
    out.depth_encoding, out.depth_frame_id = msg.encoding, msg.header.frame_id
    try:
        out.depth_m = depth_image_to_metres(msg, max_pixels)
    except ImageError as exc:
        out.depth_error = str(exc)


# -- PersonArray <-> Poses -----------------------------------------------------------------------
def poses_to_person_array(poses, ns, frame_id, skeleton, tracked=None):
    """Return a rosbags ``rtmo_msgs/PersonArray`` holding ``poses`` (pixels of the image).

    ``tracked``: the :class:`rtmo_ros.perception.Tracked` of these poses, as the node publishes
    it: ``track_id``, the (smoothed) keypoints, ``keypoints_3d``, ``position`` and
    ``velocity``. Without it: ``track_id`` -1, the raw keypoints and NaN 3D, what the node
    publishes with tracking and depth off.
    """
    types = typestore().types
    kp_t, point_t = types['rtmo_msgs/msg/Keypoint2D'], types['geometry_msgs/msg/Point']
    vector_t = types['geometry_msgs/msg/Vector3']
    n, k = poses.keypoints.shape[:2]
    if tracked is None:
        ids, keypoints = np.full(n, -1), poses.keypoints
        kpts_3d, position = np.full((n, k, 3), np.nan), np.full((n, 3), np.nan)
        velocity = position
    else:
        ids, keypoints = tracked.track_ids, tracked.keypoints
        kpts_3d, position, velocity = tracked.keypoints_3d, tracked.position, tracked.velocity
    persons = []
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in poses.boxes[i])
        persons.append(types['rtmo_msgs/msg/Person'](
            score=float(poses.scores[i]), x_min=x0, y_min=y0, x_max=x1, y_max=y1,
            keypoints=[kp_t(x=float(x), y=float(y), score=float(s))
                       for (x, y), s in zip(keypoints[i], poses.keypoint_scores[i])],
            track_id=int(ids[i]),
            keypoints_3d=[point_t(x=float(x), y=float(y), z=float(z)) for x, y, z in kpts_3d[i]],
            position=point_t(*(float(v) for v in position[i])),
            velocity=vector_t(*(float(v) for v in velocity[i]))))
    return types[PERSON_ARRAY](header=make_header(ns, frame_id), skeleton=skeleton,
                               persons=persons)


def person_array_to_poses(msg, num_keypoints):
    """Return the :class:`Poses` carried by a deserialized ``PersonArray``."""
    if not msg.persons:
        return Poses.empty(num_keypoints)
    boxes = [(p.x_min, p.y_min, p.x_max, p.y_max) for p in msg.persons]
    kpts = [[(k.x, k.y, k.score) for k in p.keypoints] for p in msg.persons]
    kpts = np.asarray(kpts, np.float32).reshape(len(boxes), -1, 3)
    return Poses(np.asarray(boxes, np.float32),
                 np.asarray([p.score for p in msg.persons], np.float32),
                 np.ascontiguousarray(kpts[..., :2]), np.ascontiguousarray(kpts[..., 2]))


def person_array_to_tracked(msg, num_keypoints):
    """Return the :class:`rtmo_ros.perception.Tracked` carried by a deserialized ``PersonArray``.

    ``keypoints_3d`` of a person whose list is not K long (a producer without depth support
    may leave it empty) are NaN; ``reset`` is False (a message does not say).
    """
    from rtmo_ros.perception import Tracked

    n = len(msg.persons)
    kpts = np.asarray([[(k.x, k.y) for k in p.keypoints] for p in msg.persons],
                      np.float32).reshape(n, num_keypoints, 2)
    kpts_3d = np.full((n, num_keypoints, 3), np.nan)
    for i, person in enumerate(msg.persons):
        if len(person.keypoints_3d) == num_keypoints:
            kpts_3d[i] = [(q.x, q.y, q.z) for q in person.keypoints_3d]
    position = np.asarray([(p.position.x, p.position.y, p.position.z) for p in msg.persons],
                          np.float64).reshape(n, 3)
    velocity = np.asarray([(p.velocity.x, p.velocity.y, p.velocity.z) for p in msg.persons],
                          np.float64).reshape(n, 3)
    return Tracked(np.asarray([p.track_id for p in msg.persons], np.int64).reshape(n), kpts,
                   kpts_3d, position, velocity, False)


# -- writing -------------------------------------------------------------------------------------
def storage_plugin(storage):
    """Return the rosbags plugin for 'sqlite3' or 'mcap'."""
    if storage not in STORAGES:
        raise BagError(f'storage {storage!r} is not supported; use sqlite3 or mcap')
    return STORAGES[storage]


class BagWriter:
    """Write messages of a few topics into a new rosbag2 directory (context manager).

    ``writer.write(topic, msgtype, log_ns, message)`` serializes a rosbags message;
    ``writer.write_raw(...)`` stores CDR bytes already serialized (e.g. received over DDS).
    """

    def __init__(self, path, storage='sqlite3'):
        path = pathlib.Path(path)
        if path.exists():
            raise BagError(f'output bag {path} exists already; remove it or choose another path')
        self.path = path
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=storage_plugin(storage))
        self._connections = {}

    def __enter__(self):
        self._writer.open()
        return self

    def __exit__(self, *exc):
        self._writer.close()

    def add_topic(self, topic, msgtype):
        """Declare ``topic`` (done by the first write otherwise)."""
        self._connection(topic, msgtype)

    def _connection(self, topic, msgtype):
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                                   typestore=typestore())
        return self._connections[topic]

    def write(self, topic, msgtype, log_ns, message):
        self.write_raw(topic, msgtype, log_ns, typestore().serialize_cdr(message, msgtype))

    def write_raw(self, topic, msgtype, log_ns, rawdata):
        self._writer.write(self._connection(topic, msgtype), int(log_ns), rawdata)


def read_person_arrays(path, topic=None):
    """Return [(log_ns, PersonArray)] of a bag (all PersonArray topics, or ``topic``)."""
    reader = open_bag(path)
    try:
        store = typestore()
        connections = [c for c in reader.connections if c.msgtype == PERSON_ARRAY
                       and (topic is None or c.topic == topic)]
        if not connections:
            raise BagError(f'bag {os.fspath(path)} has no {PERSON_ARRAY} topic'
                           + (f' named {topic}' if topic else ''))
        return [(int(t), store.deserialize_cdr(raw, c.msgtype))
                for c, t, raw in reader.messages(connections=connections)]
    finally:
        reader.close()
