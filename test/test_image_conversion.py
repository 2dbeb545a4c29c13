"""sensor_msgs Image / CompressedImage -> BGR: every encoding, padding, byte order, bad input."""
import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs')
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from rtmo_ros.image_conversion import (  # noqa: E402
    ImageError,
    bgr_to_image,
    compressed_to_bgr,
    image_to_bgr,
)

RNG = np.random.default_rng(0)
BGR = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def make(array, encoding, pad=0, big=False):
    """Image message of a (H, W[, C]) array, rows padded with ``pad`` junk bytes."""
    array = np.ascontiguousarray(array)
    if array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder('>' if big else '<'))
    h, w = array.shape[:2]
    rows = array.reshape(h, -1).view(np.uint8)
    junk = np.full((h, pad), 0xAB, np.uint8)
    data = np.hstack([rows, junk]).tobytes()
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(big),
                 step=rows.shape[1] + pad, data=data)


@pytest.mark.parametrize('pad', [0, 5])
@pytest.mark.parametrize('encoding,array', [
    ('bgr8', BGR), ('8UC3', BGR), ('rgb8', BGR[:, :, ::-1]),
    ('bgra8', np.dstack([BGR, np.full(BGR.shape[:2], 9, np.uint8)])),
    ('rgba8', np.dstack([BGR[:, :, ::-1], np.full(BGR.shape[:2], 9, np.uint8)])),
    ('bgr16', BGR.astype(np.uint16) * 256 + 77), ('rgb16', BGR[:, :, ::-1] * np.uint16(256)),
])
def test_colour_encodings_give_the_same_bgr(encoding, array, pad):
    assert np.array_equal(image_to_bgr(make(array, encoding, pad)), BGR)


@pytest.mark.parametrize('big', [False, True])
@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
def test_16_bit_grey_keeps_the_high_byte_in_either_byte_order(encoding, big):
    grey = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    out = image_to_bgr(make(grey, encoding, pad=3, big=big))
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 1], (grey >> 8).astype(np.uint8))


@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_mono8_is_replicated(encoding):
    grey = BGR[:, :, 0]
    out = image_to_bgr(make(grey, encoding, pad=1))
    assert all(np.array_equal(out[:, :, c], grey) for c in range(3))


def test_bayer_rggb_of_a_flat_colour_demosaics_to_that_colour():
    b, g, r = 30, 120, 210
    mosaic = np.empty((8, 8), np.uint8)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = r, g   # R G
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = g, b   # G B
    out = image_to_bgr(make(mosaic, 'bayer_rggb8'))
    assert np.abs(out[2:-2, 2:-2].astype(int) - (b, g, r)).max() <= 2


@pytest.mark.parametrize('encoding,y_index', [('yuv422', 1), ('yuv422_yuy2', 0)])
def test_yuv422_grey_gives_grey(encoding, y_index):
    packed = np.full((4, 8, 2), 128, np.uint8)  # U = V = 128: no colour
    packed[:, :, y_index] = 200  # Y of every pixel (UYVY: odd bytes, YUYV: even bytes)
    out = image_to_bgr(make(packed, encoding))
    # BT.601 limited range (OpenCV): 1.164 * (200 - 16) = 214
    assert out.shape == (4, 8, 3) and np.abs(out.astype(int) - 214).max() <= 1


@pytest.mark.parametrize('change,words', [
    ({'data': b'\x00' * 10}, 'truncated'),
    ({'encoding': '32FC7'}, 'unsupported image encoding'),
    ({'width': 0, 'height': 0, 'step': 0, 'data': b''}, 'zero size'),
    ({'step': 20}, 'step 20'),
])
def test_malformed_images_raise_one_clear_error(change, words):
    msg = make(BGR, 'bgr8')
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ImageError, match=words):
        image_to_bgr(msg)


def test_compressed_png_is_exact_and_jpeg_close():
    ok, png = cv2.imencode('.png', BGR)
    assert np.array_equal(compressed_to_bgr(CompressedImage(format='png', data=png.tobytes())),
                          BGR)
    smooth = cv2.resize(BGR, (64, 48), interpolation=cv2.INTER_LINEAR)
    ok, jpg = cv2.imencode('.jpg', smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_to_bgr(CompressedImage(format='jpeg', data=jpg.tobytes()))
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 4


@pytest.mark.parametrize('data', [b'', b'not an image at all'])
def test_bad_compressed_bytes_raise(data):
    with pytest.raises(ImageError, match='cannot decode'):
        compressed_to_bgr(CompressedImage(format='jpeg', data=data))


def test_bgr_to_image_round_trips():
    header = Header(frame_id='cam')
    msg = bgr_to_image(BGR, header)
    assert (msg.encoding, msg.step, msg.header.frame_id) == ('bgr8', 21, 'cam')
    assert np.array_equal(image_to_bgr(msg), BGR)
