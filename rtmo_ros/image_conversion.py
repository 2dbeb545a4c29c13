"""sensor_msgs Image / CompressedImage -> (H, W, 3) uint8 BGR, and BGR -> Image.

Works on the message fields only, so it runs without ROS 2's cv_bridge. When cv_bridge is
importable its ``imgmsg_to_cv2(msg, 'passthrough')`` unpacks the raw buffer (row padding,
byte order) and the colour conversion below is shared, so both paths give the same pixels.
Every failure raises :class:`ImageError` with one sentence naming the field and the fix.

Colour conventions (output is always 8-bit BGR, what the engine takes):
  * mono8 / 8UC1: grey replicated to three channels.
  * 16-bit encodings (mono16, 16UC1, bgr16, rgb16, ...): the 8 most significant bits are kept
    (value >> 8), i.e. full 16-bit range maps to 0..255.
  * Bayer (bayer_rggb8 ...): demosaiced with OpenCV using cv_bridge's code table.
  * yuv422 (UYVY) and yuv422_yuy2 (YUYV): converted with OpenCV.
"""
import cv2
import numpy as np

try:  # ROS 2's cv_bridge (not on PyPI); the fallback below covers everything it would
    from cv_bridge import CvBridge as _CvBridge
except ImportError:  # pragma: no cover - depends on the installation
    _CvBridge = None
_BRIDGE = _CvBridge() if _CvBridge is not None else None


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


def image_to_bgr(msg):
    """Return an (H, W, 3) uint8 BGR copy of a ``sensor_msgs/Image``; raise ImageError.

    Honours ``step`` (row padding) and ``is_bigendian`` for 16-bit data.
    """
    channels, dtype, _ = _layout(msg)
    raw = None
    if _BRIDGE is not None:
        try:
            raw = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding='passthrough')
        except Exception:  # noqa: BLE001 - any cv_bridge failure: use our own unpacking
            raw = None
    if raw is None:
        raw = unpack(msg, channels, dtype)
    return to_bgr8(raw, msg.encoding)


def _layout(msg):
    """Validate the header fields of an Image; return its ENCODINGS entry."""
    entry = ENCODINGS.get(msg.encoding)
    if entry is None:
        raise ImageError(f'unsupported image encoding {msg.encoding!r}; publish one of '
                         + ', '.join(sorted(ENCODINGS)))
    if msg.width == 0 or msg.height == 0:
        raise ImageError(f'image has zero size ({msg.width}x{msg.height}); check the driver')
    channels, dtype, _ = entry
    row = msg.width * channels * np.dtype(dtype).itemsize
    if msg.step < row:
        raise ImageError(f'image step {msg.step} is smaller than width*bytes per pixel = {row} '
                         f'for {msg.encoding}; the publisher fills step wrongly')
    if len(msg.data) < msg.step * msg.height:
        raise ImageError(f'image data has {len(msg.data)} bytes, step*height needs '
                         f'{msg.step * msg.height}; the message is truncated')
    return entry


def unpack(msg, channels, dtype):
    """View an Image's buffer as (H, W, C) (or (H, W) for one channel) of native ``dtype``."""
    dtype = np.dtype(dtype)
    buf = np.frombuffer(msg.data, np.uint8, count=msg.step * msg.height)
    rows = buf.reshape(msg.height, msg.step)[:, :msg.width * channels * dtype.itemsize]
    typed = dtype.newbyteorder('>' if msg.is_bigendian else '<')
    out = np.ascontiguousarray(rows).view(typed).reshape(msg.height, msg.width, channels)
    out = out.astype(dtype, copy=False)  # swaps the bytes only when they differ from native
    return out[:, :, 0] if channels == 1 else out


def to_bgr8(array, encoding):
    """Convert an unpacked image of ``encoding`` to an (H, W, 3) uint8 BGR array."""
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
    return cv2.cvtColor(np.ascontiguousarray(image), code)


def compressed_to_bgr(msg):
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) to (H, W, 3) uint8 BGR."""
    data = np.frombuffer(bytes(msg.data), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f'cannot decode compressed image ({len(data)} bytes, format '
                         f'{msg.format!r}); publish JPEG or PNG data')
    return image


def bgr_to_image(image_bgr, header):
    """Return a ``sensor_msgs/Image`` (bgr8) holding an (H, W, 3) uint8 BGR array."""
    from sensor_msgs.msg import Image

    h, w = image_bgr.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding='bgr8', is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(image_bgr, np.uint8).tobytes()
    return msg
