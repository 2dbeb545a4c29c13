"""sensor_msgs Image / CompressedImage -> (H, W, 3) uint8 BGR, and BGR -> Image.

Works on the message fields only (rclpy or rosbags messages alike), so it runs without ROS 2's
cv_bridge. There is one unpacking path, ours, on purpose: cv_bridge's ``imgmsg_to_cv2``
computes the row length as ``int(step / itemsize / channels)`` and so shears every row after
the first when the row padding is not a whole number of pixels (bgr8, 7 px wide, 5 padding
bytes); and cv_bridge is not installable from PyPI, so a second path could never be tested
equal to this one.

No input can make these functions raise anything but :class:`ImageError` (a ValueError), whose
message is one sentence naming the field and the fix, or use memory beyond the pixel cap:

  * Every header field of an ``Image`` is checked before the data is touched; images of more
    than ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`, 8K) pixels are refused.
  * A ``CompressedImage`` must be JPEG or PNG, recognised by its magic bytes (``format`` is
    ignored); its width and height are read from the PNG IHDR chunk or the JPEG SOF segment and
    checked against the cap *before* decoding (a 854 KiB PNG can hold a 30000 x 30000 image),
    and the decoded shape must equal the header's.
  * EXIF orientation is ignored: keypoints are in the pixel frame the camera published.

Colour conventions (output is always 8-bit BGR, what the engine takes):
  * mono8 / 8UC1: grey replicated to three channels.
  * 16-bit encodings (mono16, 16UC1, bgr16, rgb16, ...): the 8 most significant bits are kept
    (value >> 8), i.e. full 16-bit range maps to 0..255.
  * Bayer (bayer_rggb8 ...): demosaiced with OpenCV using cv_bridge's code table; OpenCV's
    bilinear demosaicing returns an all-black image below 3 x 3 pixels, so those are refused.
  * yuv422 (UYVY) and yuv422_yuy2 (YUYV): converted with OpenCV; two pixels share one U and
    one V, so the width must be even.
"""
import operator
import re
import struct

import cv2
import numpy as np

# 8K UHD (7680 x 4320): a 100 MB BGR frame, far beyond what RTMO needs (it letterboxes to 640).
MAX_IMAGE_PIXELS = 7680 * 4320
CAP_PARAMETER = 'max_image_pixels'  # the node parameter that sets max_pixels


class ImageError(ValueError):
    """An image message that cannot be turned into a BGR image."""


# encoding -> (channels, numpy dtype, conversion to BGR; None = already BGR)
_GREY, _RGB, _BGRA, _RGBA = (cv2.COLOR_GRAY2BGR, cv2.COLOR_RGB2BGR, cv2.COLOR_BGRA2BGR,
                             cv2.COLOR_RGBA2BGR)
ENCODINGS = {
    'bgr8': (3, np.uint8, None), 'rgb8': (3, np.uint8, _RGB),
    'bgra8': (4, np.uint8, _BGRA), 'rgba8': (4, np.uint8, _RGBA),
    'mono8': (1, np.uint8, _GREY), '8UC1': (1, np.uint8, _GREY),
    '8UC3': (3, np.uint8, None), '8UC4': (4, np.uint8, _BGRA),
    'bgr16': (3, np.uint16, None), 'rgb16': (3, np.uint16, _RGB),
    'bgra16': (4, np.uint16, _BGRA), 'rgba16': (4, np.uint16, _RGBA),
    'mono16': (1, np.uint16, _GREY), '16UC1': (1, np.uint16, _GREY),
    # cv_bridge's table: ROS names the top-left 2x2 block, OpenCV the one at (1, 1)
    'bayer_rggb8': (1, np.uint8, cv2.COLOR_BayerBG2BGR),
    'bayer_bggr8': (1, np.uint8, cv2.COLOR_BayerRG2BGR),
    'bayer_gbrg8': (1, np.uint8, cv2.COLOR_BayerGR2BGR),
    'bayer_grbg8': (1, np.uint8, cv2.COLOR_BayerGB2BGR),
    'yuv422': (2, np.uint8, cv2.COLOR_YUV2BGR_UYVY),
    'uyvy': (2, np.uint8, cv2.COLOR_YUV2BGR_UYVY),
    'yuv422_yuy2': (2, np.uint8, cv2.COLOR_YUV2BGR_YUY2),
    'yuyv': (2, np.uint8, cv2.COLOR_YUV2BGR_YUY2),
}
_BAYER = {e for e in ENCODINGS if e.startswith('bayer_')}
_YUV422 = {e for e, (channels, _, _) in ENCODINGS.items() if channels == 2}
_BAYER_MIN = 3  # OpenCV's bilinear demosaic gives all zeros when width or height < 3


# -- raw sensor_msgs/Image ------------------------------------------------------------------------
def image_to_bgr(msg, max_pixels=MAX_IMAGE_PIXELS):
    """Return an (H, W, 3) uint8 BGR copy of a ``sensor_msgs/Image``; raise ImageError.

    Honours ``step`` (row padding, any number of bytes) and ``is_bigendian`` for 16-bit data.
    Images of more than ``max_pixels`` pixels are refused before their data is read.
    """
    channels, dtype, _ = _layout(msg, max_pixels)
    return to_bgr8(unpack(msg, channels, dtype), msg.encoding)


# -- aligned depth images (REP 118) ---------------------------------------------------------------
DEPTH_ENCODINGS = {'16UC1': (1, np.uint16, None), '32FC1': (1, np.float32, None)}


def depth_to_metres(msg, max_pixels=MAX_IMAGE_PIXELS):
    """Return (H, W) float32 metres of a depth ``sensor_msgs/Image``, NaN where no reading.

    REP 118: 16UC1 millimetres (0 = no reading) or 32FC1 metres (NaN, inf, <= 0 = none). The
    header is validated like a colour image's (the same cap, step, size and byte order rules);
    any other encoding raises ImageError naming the two.
    """
    from rtmo_ros.perception.depth import depth_to_metres as to_metres

    channels, dtype, _ = _layout(msg, max_pixels, DEPTH_ENCODINGS, 'depth image')
    return to_metres(unpack(msg, channels, dtype), msg.encoding)


def _layout(msg, max_pixels, table=ENCODINGS, what='image'):
    """Validate every header field of an Image; return its ``table`` entry."""
    encoding = msg.encoding
    entry = table.get(encoding) if isinstance(encoding, str) else None
    if entry is None:
        raise ImageError(f'unsupported {what} encoding {encoding!r}; publish one of '
                         + ', '.join(sorted(table)))
    width, height, step = (_unsigned(msg, name) for name in ('width', 'height', 'step'))
    if width == 0 or height == 0:
        raise ImageError(f'image has zero size ({width}x{height}); check the driver')
    _check_cap(width, height, max_pixels)
    if _unsigned(msg, 'is_bigendian') not in (0, 1):
        raise ImageError(f'image is_bigendian is {msg.is_bigendian}; the publisher must set it '
                         f'to 0 (little-endian) or 1 (big-endian)')
    channels, dtype, _ = entry
    if encoding in _YUV422 and width % 2:
        raise ImageError(f'{encoding} image has odd width {width}, but two pixels share one U '
                         f'and one V; publish an even width (crop or pad one column)')
    if encoding in _BAYER and min(width, height) < _BAYER_MIN:
        raise ImageError(f'{encoding} image is {width}x{height}, OpenCV demosaics only images '
                         f'of at least {_BAYER_MIN}x{_BAYER_MIN}; publish a larger image')
    row = width * channels * np.dtype(dtype).itemsize
    if step < row:
        raise ImageError(f'image step {step} is smaller than width*bytes per pixel = {row} '
                         f'for {encoding}; the publisher fills step wrongly')
    size = _buffer(msg.data).size
    if size < step * height:  # Python ints: step * height cannot overflow
        raise ImageError(f'image data has {size} bytes, step*height needs {step * height}; '
                         f'the message is truncated')
    return entry


def _unsigned(msg, name):
    """Return the integer header field ``name`` of msg; raise ImageError unless it is >= 0."""
    value = getattr(msg, name, None)
    try:
        value = operator.index(value)
    except TypeError:
        value = -1
    if value < 0:
        raise ImageError(f'image {name} is {getattr(msg, name, None)!r}, not an unsigned '
                         f'integer; the publisher fills the header wrongly')
    return value


def _check_cap(width, height, max_pixels):
    """Refuse images of more than ``max_pixels`` pixels, before anything is allocated."""
    if width * height > max_pixels:
        raise ImageError(f'image is {width}x{height} = {width * height} pixels, more than the '
                         f'cap of {max_pixels}; raise the {CAP_PARAMETER} parameter if such '
                         f'images are expected')


def _buffer(data):
    """View a message's ``data`` (bytes, array.array, numpy array, list) as uint8 bytes."""
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:  # a list or a non-contiguous array: copy it
        array = np.asarray(data)
        if array.size == 0:
            return np.empty(0, np.uint8)
        if array.ndim != 1 or array.dtype.kind not in 'uib' or not 0 <= array.min() <= \
                array.max() <= 255:
            raise TypeError(f'{array.dtype} array of shape {array.shape}')
        return array.astype(np.uint8)
    except (TypeError, ValueError, OverflowError) as err:
        raise ImageError(f'image data is not a byte buffer ({err}); publish uint8 data') from None


def unpack(msg, channels, dtype):
    """View an Image's buffer as (H, W, C) (or (H, W) for one channel) of native ``dtype``.

    The caller has validated the header (:func:`image_to_bgr` does).
    """
    dtype = np.dtype(dtype)
    buf = _buffer(msg.data)[:msg.step * msg.height]
    rows = buf.reshape(msg.height, msg.step)[:, :msg.width * channels * dtype.itemsize]
    typed = dtype.newbyteorder('>' if msg.is_bigendian else '<')
    out = np.ascontiguousarray(rows).view(typed).reshape(msg.height, msg.width, channels)
    out = out.astype(dtype, copy=False)  # swaps the bytes only when they differ from native
    return out[:, :, 0] if channels == 1 else out


def to_bgr8(array, encoding):
    """Convert an unpacked image of ``encoding`` to an (H, W, 3) uint8 BGR array."""
    if encoding not in ENCODINGS:
        raise ImageError(f'unsupported image encoding {encoding!r}; publish one of '
                         + ', '.join(sorted(ENCODINGS)))
    channels, dtype, code = ENCODINGS[encoding]
    image = np.asarray(array)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # keep the 8 most significant bits
    elif image.dtype != np.uint8:
        raise ImageError(f'{encoding} unpacked to {image.dtype}, expected uint8 or uint16')
    if code is None:
        return np.ascontiguousarray(image)
    try:  # the known failures are refused by _layout; this catches the ones nobody knew of
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    except cv2.error as err:
        raise ImageError(f'OpenCV cannot convert this {image.shape} {encoding} image to BGR '
                         f'({_last_line(err)}); check the encoding and size') from None


# -- sensor_msgs/CompressedImage ------------------------------------------------------------------
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_JPEG_MAGIC = b'\xff\xd8\xff'
# JPEG markers without a length field: TEM, RST0..RST7, SOI, EOI (ITU T.81 table B.1)
_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}
# SOF0..SOF15 less DHT (C4), JPG (C8) and DAC (CC), which share the C0..CF range
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS, _EOI = 0xDA, 0xD9
_SKIPPED = _STANDALONE - {_EOI}
_FILL = re.compile(rb'\xff+')  # a marker is 0xFF, any number of 0xFF fill bytes, then its code
_MAX_JPEG_MARKERS = 1000  # real files have a few dozen segments before SOF; bounds the walk
# what a wrong payload usually is, for the error message
_OTHER_FORMATS = ((b'GIF8', 'GIF'), (b'BM', 'BMP'), (b'II*\x00', 'TIFF'), (b'MM\x00*', 'TIFF'),
                  (b'\x00\x00\x00\x0cjP  ', 'JPEG 2000'), (b'\xff\x0a', 'JPEG XL'))
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def compressed_to_bgr(msg, max_pixels=MAX_IMAGE_PIXELS):
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to (H, W, 3) uint8 BGR.

    The size is read from the header and checked against ``max_pixels`` before decoding; EXIF
    orientation is not applied.
    """
    data = _buffer(msg.data).tobytes()
    if data.startswith(_PNG_MAGIC):
        width, height = _png_size(data)
    elif data.startswith(_JPEG_MAGIC):
        width, height = _jpeg_size(data)
    else:
        fmt = getattr(msg, 'format', '')
        raise ImageError(f'cannot decode compressed image of format {fmt!r}: {_describe(data)}, '
                         f'not JPEG or PNG; publish JPEG or PNG data')
    _check_cap(width, height, max_pixels)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    except cv2.error as err:
        raise ImageError(f'cannot decode compressed {width}x{height} image '
                         f'({_last_line(err)}); the data is corrupt') from None
    if image is None:
        raise ImageError(f'cannot decode compressed {width}x{height} image ({len(data)} '
                         f'bytes); the data is corrupt or truncated')
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ImageError(f'compressed image decoded to {image.shape} {image.dtype}, its header '
                         f'says {width}x{height}; the data is corrupt')
    return image


def _describe(data):
    """Name what a non-JPEG, non-PNG payload looks like."""
    if not data:
        return 'the data is empty'
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return f'its {len(data)} bytes are {name}'
    if data[8:12] == b'WEBP':
        return f'its {len(data)} bytes are WebP'
    return f'its {len(data)} bytes start with {data[:8].hex(" ")}'


def _png_size(data):
    """Return (width, height) from a PNG's IHDR chunk, which must come first (PNG spec 5.6)."""
    if len(data) < 8 + 8 + 13:
        raise ImageError(f'PNG of {len(data)} bytes ends before its IHDR chunk; the data is '
                         f'truncated')
    length, kind, width, height = struct.unpack_from('>I4sII', data, 8)
    if kind != b'IHDR' or length != 13:
        raise ImageError(f'PNG starts with a {kind!r} chunk of {length} bytes, not the 13-byte '
                         f'IHDR the format requires; the data is corrupt')
    if width == 0 or height == 0:
        raise ImageError(f'PNG header says {width}x{height}; the encoder wrote an empty image')
    return width, height


def _jpeg_size(data):
    """Return (width, height) from a JPEG's first SOF segment, walking the markers before it.

    Bytes between segments are skipped up to the next 0xFF as libjpeg's ``next_marker`` does,
    so this finds the SOF that the decoder will use (and the decoded shape is checked anyway).
    """
    pos = 2  # after SOI
    for _ in range(_MAX_JPEG_MARKERS):
        start = data.find(b'\xff', pos)  # bytes before a marker are skipped
        pos = _FILL.match(data, start).end() if start >= 0 else len(data)
        if pos >= len(data):
            break
        marker, pos = data[pos], pos + 1
        if marker == 0x00 or marker in _SKIPPED:
            continue
        if marker in (_SOS, _EOI):
            raise ImageError(f'JPEG has no frame header (SOF) before its '
                             f'{"scan" if marker == _SOS else "end"}; the data is corrupt')
        if pos + 2 > len(data):
            break
        (length,) = struct.unpack_from('>H', data, pos)
        if marker in _SOF:
            if pos + 7 > len(data):
                break
            if length < 8:
                raise ImageError(f'JPEG frame header (SOF) has length {length}, less than the '
                                 f'8 bytes it needs; the data is corrupt')
            height, width = struct.unpack_from('>HH', data, pos + 3)
            if height == 0 or width == 0:  # height 0 = defined later by a DNL marker
                raise ImageError(f'JPEG frame header says {width}x{height} (a height of 0 '
                                 f'needs a DNL marker, which is not supported); publish a '
                                 f'baseline or progressive JPEG')
            return width, height
        if length < 2:
            raise ImageError(f'JPEG marker 0x{marker:02X} has length {length}; the data is '
                             f'corrupt')
        pos += length
    else:
        raise ImageError(f'JPEG has more than {_MAX_JPEG_MARKERS} markers before its frame '
                         f'header (SOF); the data is corrupt')
    raise ImageError(f'JPEG of {len(data)} bytes ends before its frame header (SOF); the data '
                     f'is truncated')


def _last_line(err):
    """The informative last line of a cv2.error message."""
    return str(err).strip().splitlines()[-1].strip() if str(err).strip() else 'cv2.error'


# -- serialized messages (raw subscriptions) ------------------------------------------------------
def serialized_to_bgr(data, compressed=False, max_pixels=MAX_IMAGE_PIXELS):
    """(std_msgs/Header, (H, W, 3) uint8 BGR) of a serialized Image or CompressedImage.

    What a ``raw=True`` subscription delivers: the fields are read from the CDR bytes
    (:mod:`rtmo_ros.cdr`) and the pixels viewed in place, instead of rclpy building the
    message; then the same checks and conversions as :func:`image_to_bgr` /
    :func:`compressed_to_bgr`. Malformed bytes raise ImageError too.
    """
    from std_msgs.msg import Header

    from rtmo_ros.cdr import CdrCompressedImage, CdrError, CdrImage

    try:
        msg = CdrCompressedImage(data) if compressed else CdrImage(data)
    except CdrError as err:
        raise ImageError(f'the image message cannot be read ({err})') from None
    header = Header(frame_id=msg.frame_id)
    header.stamp.sec, header.stamp.nanosec = msg.stamp_sec, msg.stamp_nanosec
    image = compressed_to_bgr(msg, max_pixels) if compressed else image_to_bgr(msg, max_pixels)
    return header, image


# -- BGR -> sensor_msgs/Image ---------------------------------------------------------------------
def bgr_to_image(image_bgr, header):
    """Return a ``sensor_msgs/Image`` (bgr8) holding an (H, W, 3) uint8 BGR array."""
    from sensor_msgs.msg import Image

    h, w = image_bgr.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding='bgr8', is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(image_bgr, np.uint8).tobytes()
    return msg
