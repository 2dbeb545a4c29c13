"""sensor_msgs Image / CompressedImage -> BGR: every encoding, padding, byte order, bad input."""
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip('sensor_msgs')
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from rtmo_ros.image_conversion import (  # noqa: E402
    MAX_IMAGE_PIXELS,
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


# -- abuse: sizes, caps, odd layouts (issue 12) --------------------------------------------------
def png_chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def grey_png_of_zeros(width, height):
    """A valid 8-bit grey PNG of zeros, compressed on the fly: 30000 x 30000 is 853 KiB."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    block = bytes(1 + width) * 256  # each row: filter type 0, then the pixels
    idat = [comp.compress(block) for _ in range(height // 256)]
    idat += [comp.compress(bytes(1 + width) * (height % 256)), comp.flush()]
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', ihdr) + png_chunk(b'IDAT', b''.join(idat))
            + png_chunk(b'IEND', b''))


def peak_rss_growth_mb(fn):
    """Run fn(); return how far the process's peak RSS rose above its RSS before, in MB."""
    def status(field):
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM (the peak) to the current RSS; Linux >= 4.0
    before = status('VmRSS')
    fn()
    return status('VmHWM') - before


def jpeg(width=40, height=20, extra=()):
    """A real JPEG of a horizontal gradient (left dark, right bright)."""
    image = np.repeat(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], height, 0)
    ok, data = cv2.imencode('.jpg', np.repeat(image, 3, 2), [cv2.IMWRITE_JPEG_QUALITY, 95,
                                                             *extra])
    return data.tobytes()


def with_sof_size(data, width, height):
    """The JPEG with its frame header (the first FF C0 / FF C2: FF is stuffed in scans) patched."""
    sof = min(i for i in (data.find(b'\xff\xc0'), data.find(b'\xff\xc2')) if i > 0)
    return data[:sof + 5] + struct.pack('>HH', height, width) + data[sof + 9:]


def compressed(data, fmt='jpeg'):
    return CompressedImage(format=fmt, data=data)


def test_default_cap_is_8k_and_applies_with_one_argument():
    assert MAX_IMAGE_PIXELS == 7680 * 4320
    big = Image(height=4320, width=7681, encoding='mono8', step=7681)  # no data: never read
    with pytest.raises(ImageError, match=r'7681x4320 .* cap of 33177600; raise the '
                                         r'max_image_pixels parameter'):
        image_to_bgr(big)


def test_cap_is_inclusive_and_set_by_max_pixels():
    msg = make(BGR, 'bgr8')
    assert image_to_bgr(msg, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ImageError, match='7x5 = 35 pixels, more than the cap of 34'):
        image_to_bgr(msg, max_pixels=34)


def test_png_bomb_builder_makes_valid_pngs():
    out = compressed_to_bgr(compressed(grey_png_of_zeros(300, 257), 'png'))
    assert out.shape == (257, 300, 3) and not out.any()


def test_png_bomb_is_refused_before_decoding_without_memory_growth():
    bomb = grey_png_of_zeros(30000, 30000)
    assert len(bomb) < 1024 * 1024  # 854 KiB that decode to 900 MB grey, 2.7 GB BGR
    msg = compressed(bomb, 'png')

    def decode():
        with pytest.raises(ImageError, match='30000x30000 .* max_image_pixels'):
            compressed_to_bgr(msg)
    assert peak_rss_growth_mb(decode) < 100


def test_jpeg_whose_frame_header_claims_10000x10000_is_refused_by_the_cap():
    msg = compressed(with_sof_size(jpeg(), 10000, 10000))
    for cap in (1_000_000, MAX_IMAGE_PIXELS):
        with pytest.raises(ImageError, match=f'10000x10000 = 100000000 pixels, more than the '
                                             f'cap of {cap}'):
            compressed_to_bgr(msg, max_pixels=cap)
    with pytest.raises(ImageError, match='30x20 = 600 pixels'):
        compressed_to_bgr(compressed(with_sof_size(jpeg(), 30, 20)), max_pixels=599)


def test_progressive_jpeg_size_is_read_from_sof2():
    data = jpeg(64, 48, extra=[cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert b'\xff\xc2' in data and compressed_to_bgr(compressed(data)).shape == (48, 64, 3)
    with pytest.raises(ImageError, match='64x48'):
        compressed_to_bgr(compressed(data), max_pixels=64 * 48 - 1)


def exif_orientation(value):
    """An APP1 Exif segment whose IFD0 holds one tag: Orientation (0x0112, SHORT) = value."""
    ifd = struct.pack('>HHHIHHI', 1, 0x0112, 3, 1, value, 0, 0)
    body = b'Exif\x00\x00' + b'MM\x00\x2a' + struct.pack('>I', 8) + ifd
    return b'\xff\xe1' + struct.pack('>H', len(body) + 2) + body


def test_jpeg_exif_orientation_is_not_applied():
    data = jpeg(40, 20)
    rotated = data[:2] + exif_orientation(6) + data[2:]  # 6: "rotate 90 degrees clockwise"
    plain = np.frombuffer(rotated, np.uint8)
    assert cv2.imdecode(plain, cv2.IMREAD_COLOR).shape == (40, 20, 3)  # OpenCV would rotate
    out = compressed_to_bgr(compressed(rotated))
    assert out.shape == (20, 40, 3)  # the pixel frame the camera published
    assert out[:, :5].mean() < 40 and out[:, -5:].mean() > 215  # gradient still left to right


def test_padded_bgr8_with_padding_not_a_whole_pixel_is_not_sheared():
    # cv_bridge computes row = int(step / 1 / 3) = int(26 / 3) = 8 px and shears every row
    image = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    msg = make(image, 'bgr8', pad=5)
    assert msg.step == 26
    assert np.array_equal(image_to_bgr(msg), image)


@pytest.mark.parametrize('encoding', ['yuv422', 'uyvy', 'yuv422_yuy2', 'yuyv'])
def test_yuv422_family_with_odd_width_is_refused(encoding):
    msg = make(np.full((4, 7, 2), 128, np.uint8), encoding)
    with pytest.raises(ImageError, match=f'{encoding} image has odd width 7.*even width'):
        image_to_bgr(msg)


@pytest.mark.parametrize('height,width', [(2, 8), (8, 2), (1, 1)])
def test_bayer_smaller_than_3x3_is_refused(height, width):
    # OpenCV returns all zeros for these sizes (checked on 4.14), so refuse rather than lie
    msg = make(np.full((height, width), 200, np.uint8), 'bayer_rggb8')
    with pytest.raises(ImageError, match='at least 3x3'):
        image_to_bgr(msg)


def test_bayer_3x3_demosaics():
    out = image_to_bgr(make(np.full((3, 3), 200, np.uint8), 'bayer_grbg8'))
    assert out.shape == (3, 3, 3) and out.any()


@pytest.mark.parametrize('change,words', [
    ({'is_bigendian': 2}, 'is_bigendian is 2.*0 \\(little-endian\\) or 1'),
    ({'step': 2**32 - 1}, 'data has 105 bytes, step\\*height needs 21474836475'),
    ({'height': 2**32 - 1, 'width': 2**32 - 1}, 'cap'),
    ({'encoding': ''}, 'unsupported image encoding'),
    ({'width': 8}, 'step 21 is smaller than width\\*bytes per pixel = 24'),
])
def test_header_fields_are_validated(change, words):
    msg = make(BGR, 'bgr8')
    for k, v in change.items():
        setattr(msg, k, v)
    with pytest.raises(ImageError, match=words):
        image_to_bgr(msg)


def test_longer_data_than_step_times_height_is_accepted():
    msg = make(BGR, 'bgr8')
    msg.data = bytes(msg.data) + b'\x01' * 50
    assert np.array_equal(image_to_bgr(msg), BGR)


def test_rosbags_messages_decode_like_rclpy_ones():
    from rtmo_ros.bag_io import bgr_to_compressed_msg, bgr_to_image_msg

    assert np.array_equal(image_to_bgr(bgr_to_image_msg(BGR, 0, 'cam')), BGR)
    assert compressed_to_bgr(bgr_to_compressed_msg(BGR, 0, 'cam')).shape == BGR.shape


@pytest.mark.parametrize('data,words', [
    (b'GIF89a' + bytes(20), 'GIF, not JPEG or PNG'),
    (b'BM' + bytes(30), 'BMP, not JPEG or PNG'),
    (b'RIFF\x10\x00\x00\x00WEBPVP8 ', 'WebP'),
    (bytes(range(40)), 'start with 00 01 02 03 04 05 06 07'),
    (b'', 'empty'),
])
def test_compressed_formats_other_than_jpeg_or_png_are_refused(data, words):
    with pytest.raises(ImageError, match=f'cannot decode .*{words}.*publish JPEG or PNG'):
        compressed_to_bgr(compressed(data, 'jpeg'))


def test_compressed_format_field_is_ignored():
    ok, png = cv2.imencode('.png', BGR)
    assert np.array_equal(compressed_to_bgr(compressed(png.tobytes(), 'bmp')), BGR)


def png_with(ihdr_width, ihdr_height, first=b'IHDR'):
    ok, png = cv2.imencode('.png', BGR)
    png = png.tobytes()
    ihdr = struct.pack('>II', ihdr_width, ihdr_height) + png[24:29]
    return png[:8] + png_chunk(first, ihdr) + png[33:]


@pytest.mark.parametrize('data,words', [
    (png_with(0, 5), 'PNG header says 0x5'),
    (png_with(7, 5, b'tEXt'), "PNG starts with a b'tEXt' chunk"),
    (png_with(7, 6), 'decode'),  # header and data disagree: libpng fails or the shape differs
    (b'\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR', 'ends before its IHDR'),
    (b'\xff\xd8\xff', 'ends before its frame header'),
    (b'\xff\xd8\xff\xe0\x00\x10JFIF', 'ends before its frame header'),
    (b'\xff\xd8\xff\xe0\x00\x01', 'marker 0xE0 has length 1'),
    (b'\xff\xd8\xff\xda\x00\x08', 'no frame header \\(SOF\\) before its scan'),
    (b'\xff\xd8\xff\xd9', 'no frame header \\(SOF\\) before its end'),
    (b'\xff\xd8\xff\xc0\x00\x04\x08\x00', 'ends before its frame header'),
    (b'\xff\xd8\xff\xc0\x00\x04\x08\x00\x10\x00\x10\x03', 'SOF\\) has length 4'),
])
def test_garbage_headers_raise_image_error(data, words):
    with pytest.raises(ImageError, match=words):
        compressed_to_bgr(compressed(data))


def test_jpeg_with_height_0_dnl_is_refused():
    with pytest.raises(ImageError, match='40x0 .*DNL'):
        compressed_to_bgr(compressed(with_sof_size(jpeg(), 40, 0)))


@pytest.mark.parametrize('kind', ['jpeg', 'png'])
def test_every_truncation_raises_image_error_or_decodes_to_the_header_size(kind):
    data = jpeg(16, 8) if kind == 'jpeg' else png_with(7, 5)
    for end in range(len(data)):
        try:
            out = compressed_to_bgr(compressed(data[:end]))
        except ImageError:
            continue
        assert out.shape in ((8, 16, 3), (5, 7, 3)) and out.dtype == np.uint8


@pytest.mark.parametrize('data,words', [
    (b'\xff\xd8\xff' + bytes(10_000_000), 'ends before its frame header'),
    (b'\xff\xd8' + b'\xff' * 10_000_000, 'ends before its frame header'),
    (b'\xff\xd8' + b'\xff\x00' * 5_000_000, 'more than 1000 markers'),
    (b'\xff\xd8' + b'\xff\xe0\x00\x02' * 5000, 'more than 1000 markers'),
])
def test_jpeg_header_walk_is_fast_on_10_mb_of_garbage(data, words):
    start = time.perf_counter()
    with pytest.raises(ImageError, match=words):
        compressed_to_bgr(compressed(data))
    assert time.perf_counter() - start < 1.0  # a byte-by-byte Python loop took seconds
