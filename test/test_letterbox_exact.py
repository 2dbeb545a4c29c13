"""The letterbox's pixels are mmpose 1.3.2's under OpenCV 5.0, whatever OpenCV is installed.

References: test/references/letterbox_opencv5.npz, made by
``scripts/make_mmpose_references.py letterbox`` in a venv with OpenCV 5.0 (and mmpose, whose
own ``get_warp_matrix`` the matrices were checked against there).
"""
from fractions import Fraction
import hashlib
import math
import pathlib
import platform

import cv2
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from reference_script import REFS

from rtmo_ros.engine import preprocess
from rtmo_ros.engine.preprocess import (
    fma32,
    inverse_matrix_f32,
    letterbox_image,
    mmpose_warp_matrix,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO / 'test' / 'references' / 'letterbox_opencv5.npz'


CASES = [(w, h, in_w, in_h) for w, h in REFS.LETTERBOX_IMAGES
         for in_w, in_h in REFS.LETTERBOX_INPUTS]


@pytest.fixture(scope='module')
def reference():
    return dict(np.load(REFERENCE))


def as_uint8_hwc(net_input):
    """The (3, H, W) float32 network input as the (H, W, 3) uint8 image OpenCV returns."""
    assert np.array_equal(net_input, np.rint(net_input))  # whole grey levels only
    return net_input.transpose(1, 2, 0).astype(np.uint8)


def test_reference_was_made_with_opencv5(reference):
    assert str(reference['opencv_version']).startswith('5.0')
    assert str(reference['matrices_checked_against']).startswith('mmpose 1.3.2')
    assert {f'sha256/{REFS.case_key(*c)}' for c in CASES} <= set(reference)


@pytest.mark.parametrize('case', CASES, ids=[REFS.case_key(*c) for c in CASES])
def test_letterbox_is_bit_identical_to_opencv5(reference, case):
    w, h, in_w, in_h = case
    net_input, _ = letterbox_image(REFS.synthetic_image(w, h), (in_w, in_h))
    digest = hashlib.sha256(as_uint8_hwc(net_input).tobytes()).hexdigest()
    assert digest == str(reference[f'sha256/{REFS.case_key(*case)}'])


@pytest.mark.parametrize('case', CASES, ids=[REFS.case_key(*c) for c in CASES])
def test_own_tables_are_bit_identical_to_opencv5(reference, case):
    # what runs under OpenCV 4 (and wherever the installed warpAffine is not trusted)
    w, h, in_w, in_h = case
    net_input = preprocess.warp_plan((h, w), (in_w, in_h)).apply(
        REFS.synthetic_image(w, h), np.empty((3, in_h, in_w), np.float32))
    digest = hashlib.sha256(as_uint8_hwc(net_input).tobytes()).hexdigest()
    assert digest == str(reference[f'sha256/{REFS.case_key(*case)}'])


@pytest.mark.parametrize('case', CASES[::4], ids=[REFS.case_key(*c) for c in CASES[::4]])
def test_matrix_equals_mmpose_matrix_under_opencv5(reference, case):
    w, h, in_w, in_h = case
    np.testing.assert_array_equal(mmpose_warp_matrix((h, w), (in_w, in_h)),
                                  reference[f'matrix/{REFS.case_key(*case)}'])


def test_stored_crop_matches_pixel_for_pixel(reference):
    net_input, _ = letterbox_image(REFS.synthetic_image(720, 480), (416, 416))
    np.testing.assert_array_equal(as_uint8_hwc(net_input)[60:124, :64],
                                  reference['crop/720x480_to_416x416'])


def test_half_grey_level_ties_round_to_even_as_opencv5():
    # 2x2 image (0 | 1) doubled: output column 1 samples x = 0.5, exactly 0.5 grey. OpenCV 5
    # rounds half to even (0); OpenCV 4's fixed point rounds half up (1). Column 3 mixes the
    # last image column with the pad: 1 + 0.5 * 113 = 57.5 -> 58.
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 1] = 1
    net_input, _ = letterbox_image(img, (4, 4))
    np.testing.assert_array_equal(net_input[0, 0], [0, 0, 1, 58])
    np.testing.assert_array_equal(net_input[0, 3], [57, 57, 58, 86])


@pytest.fixture
def fresh_caches():
    """Plans and OpenCV agreement decided anew in the test, and forgotten after it."""
    preprocess.warp_plan.cache_clear()
    preprocess.opencv_warp_agrees.cache_clear()
    yield
    preprocess.warp_plan.cache_clear()
    preprocess.opencv_warp_agrees.cache_clear()


def test_the_installed_opencv_warp_is_used_only_where_it_is_opencv5(fresh_caches):
    agrees = preprocess.opencv_warp_agrees((480, 720), (416, 416))
    if cv2.__version__.startswith('4.'):
        assert not agrees  # fixed point: 17 % of these pixels differ
    elif cv2.__version__.startswith('5.0') and platform.machine() in ('x86_64', 'AMD64'):
        assert agrees
    else:
        pytest.skip(f'OpenCV {cv2.__version__} on {platform.machine()}: either way is right')


def test_an_opencv_warp_off_by_one_grey_level_is_not_used(monkeypatch, fresh_caches):
    real = cv2.warpAffine
    monkeypatch.setattr(preprocess.cv2, 'warpAffine', lambda *a, **k: real(*a, **k) ^ 1)
    case = (720, 480, 416, 416)
    net_input, _ = letterbox_image(REFS.synthetic_image(720, 480), (416, 416))
    digest = hashlib.sha256(as_uint8_hwc(net_input).tobytes()).hexdigest()
    assert not preprocess.opencv_warp_agrees((480, 720), (416, 416))
    assert digest == str(dict(np.load(REFERENCE))[f'sha256/{REFS.case_key(*case)}'])


def test_an_opencv_warp_that_agrees_does_the_work(monkeypatch, fresh_caches, reference):
    calls = []

    def opencv5(image, _matrix, size, **_kwargs):  # OpenCV 5's pixels, as the plan defines
        calls.append(image.shape)
        plan = preprocess.warp_plan(image.shape[:2], size)
        return as_uint8_hwc(plan.apply(image, np.empty((3, size[1], size[0]), np.float32)))

    monkeypatch.setattr(preprocess.cv2, 'warpAffine', opencv5)
    for case in [(720, 480, 416, 416), (333, 777, 640, 640)]:
        w, h, in_w, in_h = case
        net_input, _ = letterbox_image(REFS.synthetic_image(w, h), (in_w, in_h))
        digest = hashlib.sha256(as_uint8_hwc(net_input).tobytes()).hexdigest()
        assert digest == str(reference[f'sha256/{REFS.case_key(*case)}'])
    assert calls == [(480, 720, 3)] * 2 + [(777, 333, 3)] * 2  # the probe, then the image
    letterbox_image(REFS.synthetic_image(1920, 1080), (640, 640))  # whole pixels: a gather
    # OpenCV 5's scalar loop ends rows whose width is not a multiple of its vector width, and
    # differs there: such widths (never an RTMO input's) are not handed to it
    letterbox_image(REFS.synthetic_image(720, 480), (100, 416))
    assert len(calls) == 4


@pytest.mark.parametrize('case', [(720, 480, 416, 416), (333, 777, 640, 640), (97, 13, 320, 320)])
def test_per_pixel_fallback_equals_separable_plan(case):
    # the fallback for matrices whose source x varies along a column (never seen for 'fit')
    w, h, in_w, in_h = case
    img = REFS.synthetic_image(w, h)
    m = inverse_matrix_f32(mmpose_warp_matrix((h, w), (in_w, in_h)))
    xs, ys = np.arange(in_w, dtype=np.float32), np.arange(in_h, dtype=np.float32)
    mx = (ys * m[1]).astype(np.float32) + m[2]
    my = (ys * m[4]).astype(np.float32) + m[5]
    plan = preprocess.PerPixelPlan(fma32(m[0], xs[None, :], mx[:, None]),
                                   fma32(m[3], xs[None, :], my[:, None]))
    out = plan.apply(img, np.empty((3, in_h, in_w), np.float32))
    np.testing.assert_array_equal(out, letterbox_image(img, (in_w, in_h))[0])


def _letterbox_sum(queue):
    queue.put(float(letterbox_image(REFS.synthetic_image(720, 480), (416, 416))[0].sum()))


def test_letterbox_runs_in_a_forked_child():
    # the helper thread of the parent does not exist in a fork (DataLoader workers)
    import multiprocessing
    expected = float(letterbox_image(REFS.synthetic_image(720, 480), (416, 416))[0].sum())
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    child = ctx.Process(target=_letterbox_sum, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=5) == expected


def test_out_buffer_is_filled_and_returned():
    out = np.full((3, 320, 320), -1.0, np.float32)
    res, box = letterbox_image(REFS.synthetic_image(640, 480), (320, 320), out=out)
    assert res is out and out.min() >= 0 and box.scale == 0.5
    np.testing.assert_array_equal(out[:, :40], 114)  # the pad above the image


# ---- the formula, from exact rational arithmetic --------------------------------------------

def round_f32(value):
    """The float32 nearest to the Fraction ``value`` (ties to even)."""
    guess = np.float32(float(value))
    near = [np.nextafter(guess, np.float32(-np.inf)), guess,
            np.nextafter(guess, np.float32(np.inf))]
    return min(near, key=lambda f: (abs(Fraction(float(f)) - value),
                                    int(np.array(f).view(np.uint32)) & 1))


def fma_exact(a, b, c):
    return round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def sub_f32(a, b):
    return round_f32(Fraction(float(a)) - Fraction(float(b)))


def reference_pixel(img, m, x, y, ch):
    """OpenCV 5's INTER_LINEAR / BORDER_CONSTANT value of one output pixel, from its formula."""
    h, w = img.shape[:2]
    mx = round_f32(Fraction(float(round_f32(Fraction(y) * Fraction(float(m[1]))))) +
                   Fraction(float(m[2])))
    my = round_f32(Fraction(float(round_f32(Fraction(y) * Fraction(float(m[4]))))) +
                   Fraction(float(m[5])))
    sx, sy = fma_exact(m[0], np.float32(x), mx), fma_exact(m[3], np.float32(x), my)
    ix, iy = math.floor(sx), math.floor(sy)
    ax, ay = sub_f32(sx, np.float32(ix)), sub_f32(sy, np.float32(iy))

    def p(yy, xx):
        return np.float32(img[yy, xx, ch] if 0 <= yy < h and 0 <= xx < w else 114)

    f0 = fma_exact(ax, sub_f32(p(iy, ix + 1), p(iy, ix)), p(iy, ix))
    f1 = fma_exact(ax, sub_f32(p(iy + 1, ix + 1), p(iy + 1, ix)), p(iy + 1, ix))
    return round(Fraction(float(fma_exact(ay, sub_f32(f1, f0), f0))))  # half to even


@settings(max_examples=12, deadline=None)
@given(w=st.integers(1, 40), h=st.integers(1, 40), in_w=st.integers(4, 24),
       in_h=st.integers(4, 24), seed=st.integers(0, 2 ** 16))
def test_letterbox_equals_opencv5_formula(w, h, in_w, in_h, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = letterbox_image(img, (in_w, in_h))[0]
    m = inverse_matrix_f32(mmpose_warp_matrix((h, w), (in_w, in_h)))
    expected = np.array([[[reference_pixel(img, m, x, y, c) for x in range(in_w)]
                          for y in range(in_h)] for c in range(3)], np.float32)
    np.testing.assert_array_equal(ours, expected)


def test_inverse_matrix_is_opencvs():
    import cv2
    m = mmpose_warp_matrix((480, 720), (416, 416))
    np.testing.assert_array_equal(inverse_matrix_f32(m),
                                  cv2.invertAffineTransform(m).astype(np.float32).ravel())


def test_fma32_rounds_once():
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, 300).astype(np.float32)
    b = rng.uniform(-300, 300, 300).astype(np.float32)
    c = rng.uniform(-300, 300, 300).astype(np.float32)
    # a trap for double rounding: a * b = 2^-24 + 2^-60, so 1 + a * b lies just above the
    # float32 midpoint 1 + 2^-24 but rounds onto it in float64 (then to even, 1.0)
    a[:20] = np.float32(2.0 ** -24 * (1 - 2.0 ** -12 + 2.0 ** -24))
    b[:20] = np.float32(1 + 2.0 ** -12)
    c[:20] = np.float32(1.0)
    ours = fma32(a, b, c)
    expected = np.array([fma_exact(x, y, z) for x, y, z in zip(a, b, c)], np.float32)
    np.testing.assert_array_equal(ours, expected)
    assert ours[0] == np.float32(1 + 2.0 ** -23)
    naive = (a[:1].astype(np.float64) * b[:1] + c[:1]).astype(np.float32)
    assert naive[0] == np.float32(1.0)  # what a plain float64 evaluation gives
