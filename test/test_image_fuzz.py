"""Fuzzing the image conversion: any Image / CompressedImage gives BGR or ImageError, nothing else.

Deterministic (derandomize=True, no example database) and a few seconds in all. Memory is bounded:
the process's peak RSS may not rise by more than PEAK_RSS_MB during a whole fuzz run.
"""
import struct
import zlib

import cv2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

pytest.importorskip('sensor_msgs')
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from rtmo_ros.image_conversion import (  # noqa: E402
    ENCODINGS,
    MAX_IMAGE_PIXELS,
    ImageError,
    compressed_to_bgr,
    image_to_bgr,
)

PEAK_RSS_MB = 300
SMALL_CAP = 1 << 20  # decoding up to 1 Mpx keeps each example fast
FUZZ = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
UINT32 = 2**32 - 1


def status_kb(field):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


@pytest.fixture
def bounded_memory():
    """Fail the test if the peak RSS rises more than PEAK_RSS_MB above the RSS at its start."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM (the peak) to the current RSS; Linux >= 4.0
    before = status_kb('VmRSS')
    yield
    assert (status_kb('VmHWM') - before) / 1024 < PEAK_RSS_MB


def check(convert, msg, cap):
    """The contract: ImageError, or an (H, W, 3) uint8 array within the cap."""
    try:
        out = convert(msg, max_pixels=cap)
    except ImageError:
        return None
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] * out.shape[1] <= cap
    return out


# -- raw sensor_msgs/Image ------------------------------------------------------------------------
# lists repeat the valid values so that about half of the examples get through to OpenCV
encodings = st.sampled_from(sorted(ENCODINGS) * 3 + ['', 'junk', 'BGR8', '32FC1', 'bayer_rggb16',
                                                     'yuv420', 'bgr8 '])
small = st.integers(1, 40)
sizes = st.one_of(small, small, small, small, st.sampled_from([0, 1, 2, 3, 4, 5, 7]),
                  st.sampled_from([4321, 7680, 65535, 2**31, UINT32]))
endianness = st.sampled_from([0, 1] * 6 + [2, 7, 255])


@st.composite
def images(draw):
    encoding = draw(encodings)
    width, height = draw(sizes), draw(sizes)
    channels, dtype, _ = ENCODINGS.get(encoding, (3, np.uint8, None))
    row = width * channels * np.dtype(dtype).itemsize
    padded = st.integers(0, 9).map(lambda pad: row + pad)
    step = draw(st.one_of(padded, padded, st.integers(0, 300), st.sampled_from([0, row - 1,
                                                                                 UINT32])))
    step = min(max(step, 0), UINT32)
    needed = step * height
    size = draw(st.one_of(st.just(needed), st.integers(0, 9).map(lambda d: needed + d),
                          st.integers(0, 9).map(lambda d: needed + d),
                          st.integers(1, 9).map(lambda d: needed - d), st.integers(0, 400)))
    size = min(max(size, 0), 1 << 20)  # the buffer itself stays small: the headers lie
    seed = draw(st.integers(0, 2**32 - 1))
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    bigendian = draw(endianness)
    return Image(encoding=encoding, width=min(width, UINT32), height=min(height, UINT32),
                 step=step, is_bigendian=bigendian, data=data)


@FUZZ
@given(msg=images(), cap=st.sampled_from([SMALL_CAP, MAX_IMAGE_PIXELS]))
def test_any_image_message_gives_bgr_of_its_size_or_image_error(msg, cap, bounded_memory):
    out = check(image_to_bgr, msg, cap)
    assert out is None or out.shape[:2] == (msg.height, msg.width)


@FUZZ
@given(encoding=st.sampled_from(sorted(ENCODINGS)), width=st.integers(1, 33),
       height=st.integers(1, 33), pad=st.integers(0, 9), extra=st.integers(0, 9),
       bigendian=st.sampled_from([0, 1]), seed=st.integers(0, 2**32 - 1))
def test_every_valid_image_decodes_and_bgr8_exactly(encoding, width, height, pad, extra,
                                                    bigendian, seed, bounded_memory):
    if encoding in ('yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'):
        width += width % 2  # two pixels share one U and one V
    if encoding.startswith('bayer_'):
        width, height = max(width, 3), max(height, 3)  # OpenCV's demosaic minimum
    channels, dtype, _ = ENCODINGS[encoding]
    step = width * channels * np.dtype(dtype).itemsize + pad
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, step * height + extra, dtype=np.uint8)
    msg = Image(encoding=encoding, width=width, height=height, step=step,
                is_bigendian=bigendian, data=data.tobytes())
    out = image_to_bgr(msg)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    if encoding in ('bgr8', '8UC3'):
        rows = data[:step * height].reshape(height, step)[:, :width * 3]
        assert np.array_equal(out, rows.reshape(height, width, 3))


# -- sensor_msgs/CompressedImage ------------------------------------------------------------------
def _real(ext, *params, size=(48, 64)):
    rng = np.random.default_rng(len(ext) + len(params))
    image = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (5, 5), 0)
    ok, data = cv2.imencode(ext, image, list(params))
    return data.tobytes()


REAL = [_real('.png'), _real('.jpg'), _real('.jpg', cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        _real('.png', size=(3, 5)), _real('.jpg', size=(1, 1))]


def png_size_patched(data, width, height):
    ihdr = data[12:16] + struct.pack('>II', width, height) + data[24:29]
    return data[:8] + data[8:12] + ihdr + struct.pack('>I', zlib.crc32(ihdr)) + data[33:]


def jpeg_size_patched(data, width, height):
    sof = min(i for i in (data.find(b'\xff\xc0'), data.find(b'\xff\xc2')) if i > 0)
    return data[:sof + 5] + struct.pack('>HH', height, width) + data[sof + 9:]


@st.composite
def compressed_buffers(draw):
    kind = draw(st.sampled_from(['random', 'magic', 'truncated', 'corrupted', 'claims']))
    real = draw(st.sampled_from(REAL))
    if kind == 'random':
        return draw(st.binary(max_size=600))
    if kind == 'magic':  # a valid signature, then anything
        magic = b'\x89PNG\r\n\x1a\n' if draw(st.booleans()) else b'\xff\xd8\xff'
        return magic + draw(st.binary(max_size=600))
    if kind == 'truncated':
        return real[:draw(st.integers(0, len(real)))]
    if kind == 'corrupted':
        data = bytearray(real)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    big = st.one_of(st.integers(0, 70000), st.sampled_from([0, 1, 30000, 65535]))
    width, height = draw(big), draw(big)
    if real.startswith(b'\x89PNG'):
        return png_size_patched(real, width, height)
    return jpeg_size_patched(real, min(width, 65535), min(height, 65535))


@FUZZ
@given(data=compressed_buffers(), fmt=st.sampled_from(['jpeg', 'png', 'rgb8; jpeg compressed bgr8',
                                                       '', 'bmp']))
def test_any_compressed_message_gives_bgr_or_image_error(data, fmt, bounded_memory):
    check(compressed_to_bgr, CompressedImage(format=fmt, data=data), SMALL_CAP)


@FUZZ
@given(width=st.integers(1, 65535), height=st.integers(1, 65535), png=st.booleans())
def test_headers_over_the_default_cap_are_refused_before_decoding(width, height, png,
                                                                  bounded_memory):
    if width * height <= MAX_IMAGE_PIXELS:
        height = MAX_IMAGE_PIXELS // width + 1
        if height > 65535:
            width = MAX_IMAGE_PIXELS // 65535 + 1
            height = 65535
    data = (png_size_patched(REAL[0], width, height) if png
            else jpeg_size_patched(REAL[1], width, height))
    with pytest.raises(ImageError, match='max_image_pixels'):
        compressed_to_bgr(CompressedImage(format='png' if png else 'jpeg', data=data))
