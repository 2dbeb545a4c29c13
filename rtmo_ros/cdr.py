"""``rtmo_msgs/PersonArray`` written straight to its serialized (CDR) bytes from numpy arrays.

``publisher.publish(bytes)`` sends bytes as they are (``publish_raw``), so the pose node can
skip building ~1700 Python message objects per frame and rclpy's serializer on the latency
path. :func:`person_array_cdr` writes what ``serialize_message(poses_to_person_array(...))``
writes: every data byte is the same; padding bytes are zero here, where Fast CDR leaves
whatever its buffer held (readers skip padding, so both decode to the same message).

Layout (the RMW's plain CDR, XCDR1 little-endian): a 4-byte encapsulation header
``00 01 00 00``, then the fields in declaration order, each primitive aligned to its own size
counted from the end of that header; strings are a uint32 length (bytes + NUL), the UTF-8
bytes and a NUL; sequences a uint32 count then the elements. Pure numpy: no ROS import.
"""
import struct

import numpy as np

ENCAPSULATION = b'\x00\x01\x00\x00'  # CDR_LE, no options


def person_array_cdr(poses, header, skeleton_name, tracked=None):
    """Return the serialized ``PersonArray`` of :func:`conversions.poses_to_person_array`.

    Same arguments and conventions: without ``tracked`` the keypoints are the raw ones,
    ``track_id`` is -1 and every 3D component NaN; with it the ids, smoothed keypoints, 3D
    keypoints, position and velocity come from ``tracked``.
    """
    n, k = poses.keypoints.shape[:2]
    head = _header_and_skeleton(header, skeleton_name) + struct.pack('<I', n)
    if n == 0:
        return ENCAPSULATION + head
    columns = _columns(poses, tracked, n, k)
    start = len(head)  # CDR offsets count from the end of the encapsulation header
    if start % 8 == 0:  # every person starts 8-aligned: one array for all
        return ENCAPSULATION + head + _persons(columns, slice(None), start, k)
    # The first person starts at 4 mod 8; it ends 8-aligned (it ends with float64s), so the
    # others all start at 0 mod 8 and share one layout, with a different padding
    first = _persons(columns, slice(0, 1), start, k)
    return b''.join((ENCAPSULATION, head, first,
                     _persons(columns, slice(1, None), start + len(first), k)))


def _header_and_skeleton(header, skeleton_name):
    # std_msgs/Header: builtin_interfaces/Time (int32 sec, uint32 nanosec), string frame_id
    out = bytearray(struct.pack('<iI', header.stamp.sec, header.stamp.nanosec))
    for text in (header.frame_id, skeleton_name):
        _pad(out, 4)
        data = _c_string(text)
        out += struct.pack('<I', len(data)) + data
    _pad(out, 4)  # for the persons count that follows
    return bytes(out)


def _c_string(text):
    # rosidl hands the UTF-8 to C as a NUL-terminated char*: text after a NUL is lost
    data = text.encode('utf-8')
    return data.split(b'\0', 1)[0] + b'\0'


def _pad(buf, size):
    buf += bytes(-len(buf) % size)


def _columns(poses, tracked, n, k):
    """The per-person values in message order, shaped (n, ...) for the structured array."""
    if tracked is None:
        ids, keypoints = np.full(n, -1), poses.keypoints
        nan = np.full((n, 3), np.nan)
        kpts_3d, position, velocity = np.full((n, k, 3), np.nan), nan, nan
    else:
        ids, keypoints = np.asarray(tracked.track_ids), tracked.keypoints
        kpts_3d, position, velocity = tracked.keypoints_3d, tracked.position, tracked.velocity
    if n and (ids.min() < -2**31 or ids.max() >= 2**31):
        # the message setter refuses these too; a cast would wrap them silently
        raise ValueError('track ids do not fit int32')
    kpts = np.empty((n, k, 3), np.float32)
    kpts[..., :2], kpts[..., 2] = keypoints, poses.keypoint_scores
    return {'score': poses.scores, 'box': poses.boxes, 'kpts': kpts, 'track_id': ids,
            'kpts_3d': kpts_3d, 'position': position, 'velocity': velocity}


def _persons(columns, rows, start, k):
    """CDR bytes of the persons ``rows`` when the first of them starts at offset ``start``."""
    array = np.zeros(len(columns['score'][rows]), _person_dtype(start % 8, k))  # zero padding
    for name, values in columns.items():
        array[name] = values[rows]
    array['n_kpts'] = array['n_kpts_3d'] = k
    return array.tobytes()


def _person_dtype(start, k):
    """Structured dtype of one rtmo_msgs/Person starting at ``start`` mod 8 (0 or 4).

    float32s and uint32s keep 4-byte alignment from any 4-aligned start, but the float64
    Points need 8: the pad before them depends on the start and on K.
    """
    points = 32 + 12 * k  # score, box, count, keypoints, track_id, count
    points += -(start + points) % 8
    fields = [('score', '<f4', 0), ('box', ('<f4', (4,)), 4), ('n_kpts', '<u4', 20),
              ('kpts', ('<f4', (k, 3)), 24), ('track_id', '<i4', 24 + 12 * k),
              ('n_kpts_3d', '<u4', 28 + 12 * k), ('kpts_3d', ('<f8', (k, 3)), points),
              ('position', ('<f8', (3,)), points + 24 * k),
              ('velocity', ('<f8', (3,)), points + 24 * k + 24)]
    names, formats, offsets = zip(*fields)
    return np.dtype({'names': names, 'formats': formats, 'offsets': offsets,
                     'itemsize': points + 24 * k + 48})


# --- reading images without rclpy's message objects --------------------------------------------

class CdrError(ValueError):
    """Serialized bytes that are not a well-formed message of the expected type."""


class _Reader:
    """Reads plain CDR fields in order; alignment counts from the end of the 4-byte header."""

    def __init__(self, data):
        self.view = memoryview(data).cast('B')
        if len(self.view) < 4 or self.view[0] != 0 or self.view[1] not in (0, 1):
            raise CdrError('not a CDR message (no plain CDR encapsulation header)')
        self.order = '<' if self.view[1] == 1 else '>'
        self.pos = 4

    def _take(self, size, align):
        self.pos += -(self.pos - 4) % align
        end = self.pos + size
        if end > len(self.view):
            raise CdrError(f'message truncated: needs {end} bytes, has {len(self.view)}')
        start, self.pos = self.pos, end
        return start

    def u32(self):
        start = self._take(4, 4)
        return struct.unpack_from(self.order + 'I', self.view, start)[0]

    def i32(self):
        start = self._take(4, 4)
        return struct.unpack_from(self.order + 'i', self.view, start)[0]

    def u8(self):
        return self.view[self._take(1, 1)]

    def string(self):
        length = self.u32()
        start = self._take(length, 1)
        raw = bytes(self.view[start:start + length])
        if length == 0 or raw[-1] != 0:
            raise CdrError('a string field is not NUL-terminated')
        try:
            return raw[:-1].decode('utf-8')
        except UnicodeDecodeError:
            raise CdrError('a string field is not UTF-8') from None

    def octets(self):
        """A uint8[] field as a numpy view into the message's buffer (no copy)."""
        count = self.u32()
        start = self._take(count, 1)
        return np.frombuffer(self.view, np.uint8, count, start)

    def header(self):
        """std_msgs/Header as (sec, nanosec, frame_id)."""
        return self.i32(), self.u32(), self.string()


class CdrImage:
    """The fields of a ``sensor_msgs/Image`` read from its bytes; ``data`` views the bytes."""

    def __init__(self, data):
        r = _Reader(data)
        self.stamp_sec, self.stamp_nanosec, self.frame_id = r.header()
        self.height, self.width = r.u32(), r.u32()
        self.encoding = r.string()
        self.is_bigendian = r.u8()
        self.step = r.u32()
        self.data = r.octets()


class CdrCompressedImage:
    """The fields of a ``sensor_msgs/CompressedImage`` read from its bytes."""

    def __init__(self, data):
        r = _Reader(data)
        self.stamp_sec, self.stamp_nanosec, self.frame_id = r.header()
        self.format = r.string()
        self.data = r.octets()
