"""Image -> network input, exactly as mmpose's RTMO test pipeline (BottomupResize 'fit').

Network input contract: float32 (3, H, W), BGR channel order, values 0..255, no mean/std.
The image is scaled to fit and **centred** on a canvas of pad value 114 by one affine warp
(mmpose ``BottomupResize(resize_mode='fit', pad_val=114)``; rtmlib pastes top-left instead).

The warp's pixels are defined here, not by the installed ``cv2.warpAffine``: they are
bit-identical to what OpenCV 5.0's ``warpAffine(INTER_LINEAR, BORDER_CONSTANT)`` gives mmpose
1.3.2 on an x86-64 CPU with FMA, whichever OpenCV is installed. Where the installed
``cv2.warpAffine`` gives those same pixels for a geometry (OpenCV 5.0 on x86-64: checked once
per image size and input size on a random probe, ``opencv_warp_agrees``) and the scale is
fractional, it does the work, being faster there; otherwise the tables below do.

OpenCV 4.x interpolates in fixed point (source
positions rounded to 1/32 pixel, ties rounded up) and differs from 5.0 by up to 6 grey levels;
5.0 interpolates in float32 with FMA:

* the inverse of mmpose's matrix (``cv::warpAffine`` inverts it in double) is cast to float32;
  source x = ``fma(M0, x, M2)``, source y = ``fl(fl(y * M4) + M5)`` (x86 wheels),
* ``f_row = fma(ax, p01 - p00, p00)`` per source row, ``f = fma(ay, f1 - f0, f0)``, all float32,
  ``ax``/``ay`` the fractional parts; neighbours outside the image take the pad value,
* the result is rounded half to even.

For mmpose's matrices (scale and translation, off-diagonal terms below 1e-15) this is
separable: per output column a source index and a weight, per output row the same, cached
per (image size, input size) in a ``WarpPlan``. Whole-pixel scales (1920x1080, 1280x720,
640x480 -> 640) are one gather (``cv2.remap`` nearest, integer maps). Otherwise the two
passes run in float32 mul/add on two threads, within 1.07e-4 of the FMA result; the
few values that end within 1.2e-4 of k + 0.5 are recomputed per pixel with an exact float32
FMA (``fma32``), so every rounding matches. The rows where a 1e-16 off-diagonal term moves
the source y along the row (where ``fl(y * M4) + M5`` is 0) are computed per pixel.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
import os
import threading

import cv2
import numpy as np

PAD_VALUE = 114  # YOLOX / mmpose letterbox grey


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits in the network input: ``p_net = p_img * scale + offset``."""

    scale: float
    offset_x: float
    offset_y: float

    def to_image(self, xy):
        """Map (..., 2) network-input pixels back to image pixels (a new float32 array)."""
        out = np.array(xy, dtype=np.float32)  # a copy; in-place ops below keep float32
        out -= (self.offset_x, self.offset_y)
        out /= self.scale
        return out

    def boxes_to_image(self, boxes):
        """Map (N, 4) xyxy boxes from network-input pixels to image pixels."""
        return self.to_image(np.asarray(boxes, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)


def fit_letterbox(image_hw, input_wh):
    """Return the centred 'fit' letterbox of an (h, w) image in an input of size (W, H)."""
    h, w = image_hw
    in_w, in_h = input_wh
    k = min(in_w / w, in_h / h)
    # mmpose maps the image centre (w/2, h/2) to the input centre (W/2, H/2)
    return Letterbox(k, (in_w - k * w) / 2.0, (in_h - k * h) / 2.0)


def check_image(image):
    """Raise ValueError unless ``image`` is an (H, W, 3) uint8 BGR array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f'image must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError('image must be an (H, W, 3) uint8 BGR array, got shape '
                         f'{image.shape} dtype {image.dtype}')
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f'image is empty: shape {image.shape}')


def letterbox_image(image_bgr, input_wh, out=None):
    """Warp an (H, W, 3) uint8 BGR image into the network input.

    Returns (input, Letterbox) where input is float32 (3, H_in, W_in) BGR 0..255. ``out``, if
    given, is a preallocated (3, H_in, W_in) float32 array that is filled and returned.
    """
    check_image(image_bgr)
    in_w, in_h = (int(v) for v in input_wh)
    if out is None:
        out = np.empty((3, in_h, in_w), np.float32)
    plan = warp_plan(image_bgr.shape[:2], (in_w, in_h))
    if plan.copy_map is None and opencv_warp_agrees(image_bgr.shape[:2], (in_w, in_h)):
        opencv_warp(image_bgr, (in_w, in_h), out)
    else:
        plan.apply(image_bgr, out)
    return out, fit_letterbox(image_bgr.shape[:2], input_wh)


def opencv_warp(image_bgr, input_wh, out):
    """mmpose's own letterbox: ``cv2.warpAffine`` of the installed OpenCV into ``out``."""
    warped = cv2.warpAffine(image_bgr, _cached_matrix(image_bgr.shape[:2], tuple(input_wh)),
                            tuple(input_wh), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
    np.copyto(out, warped.transpose(2, 0, 1), casting='unsafe')
    return out


@lru_cache(maxsize=32)
def opencv_warp_agrees(image_hw, input_wh):
    """True when the installed ``cv2.warpAffine`` gives this letterbox's pixels (checked once).

    OpenCV 5.0's vector loop on x86-64 computes what ``WarpPlan`` computes, faster at
    fractional scales; its scalar loop for the last pixels of a row whose width is not a
    multiple of the vector width does not (1 grey level in ~1 % of such geometries, measured):
    only input widths that are multiples of 32 qualify, as every RTMO input's are (stride 32;
    0 of 19046 random such geometries differed). OpenCV 4.x (fixed point) differs in up to
    17 % of the pixels. A seeded random probe of the geometry through both decides: the same
    formula agrees on all of it, a different one shows on thousands of its pixels.
    """
    if input_wh[0] % 32:
        return False
    probe = np.random.default_rng(0).integers(0, 256, tuple(image_hw) + (3,), np.uint8)
    in_w, in_h = input_wh
    ours = warp_plan(tuple(image_hw), tuple(input_wh)).apply(
        probe, np.empty((3, in_h, in_w), np.float32))
    theirs = opencv_warp(probe, input_wh, np.empty((3, in_h, in_w), np.float32))
    return bool(np.array_equal(ours, theirs))


# ---- mmpose's matrix -------------------------------------------------------------------------

def mmpose_warp_matrix(image_hw, input_wh):
    """The 2x3 image -> input matrix mmpose 1.3.2's ``BottomupResize('fit')`` warps with.

    mmpose builds it with ``get_warp_matrix``: three float32 point pairs solved by
    ``cv2.getAffineTransform``, so it is the ideal scale/offset up to ~1e-16 (and float32
    centre and scale). Reproduced operation by operation; pixels depend on those last bits.
    """
    h, w = image_hw
    in_w, in_h = input_wh
    ratio = w / h
    rsz_w = min(in_w, in_h * ratio)
    center = np.array([w / 2, h / 2], np.float32)
    src_w = np.float32(w * in_w / rsz_w)  # mmpose's scale[0]; scale[1] is not used
    src = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([src_w * -0.5, 0.0])
    src[2] = _third_point(src[0], src[1])
    dst = np.zeros((3, 2), np.float32)
    dst[0] = [in_w * 0.5, in_h * 0.5]
    dst[1] = np.array([in_w * 0.5, in_h * 0.5]) + np.array([in_w * -0.5, 0.0])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(src, dst)


@lru_cache(maxsize=32)
def _cached_matrix(image_hw, input_wh):
    """``mmpose_warp_matrix``, computed once per geometry (read-only)."""
    matrix = mmpose_warp_matrix(image_hw, input_wh)
    matrix.flags.writeable = False
    return matrix


def _third_point(a, b):
    """mmpose ``_get_3rd_point``: ``b`` plus ``a - b`` turned 90 degrees (float32 arithmetic)."""
    d = a - b
    return b + np.r_[-d[1], d[0]]


def inverse_matrix_f32(matrix):
    """The float32 (M0..M5) that ``cv::warpAffine`` samples with: the inverse of ``matrix``.

    Same double-precision formula as OpenCV's ``warpAffine`` (and ``invertAffineTransform``).
    """
    m = [float(v) for v in np.asarray(matrix, np.float64).ravel()]
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[4] * d, m[0] * d
    a12, a21 = -m[1] * d, -m[3] * d
    b1 = -a11 * m[2] - a12 * m[5]
    b2 = -a21 * m[2] - a22 * m[5]
    return np.array([a11, a12, b1, a21, a22, b2], np.float32)


# ---- exact float32 arithmetic ----------------------------------------------------------------

def fma32(a, b, c):
    """float32 ``a * b + c`` rounded once (to nearest, ties to even), like a hardware FMA.

    The float64 product of two float32 is exact; the float64 sum is corrected by its exact
    error (TwoSum) where it sits exactly halfway between two float32.
    """
    # operands cast to float64 arrays first: numpy 1 would multiply a 0-d float64 by a
    # float32 array in float32
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)  # p + c == s + err exactly
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    side = np.where(s > r64, np.float32(np.inf), np.float32(-np.inf))
    other = np.nextafter(r, side)  # the float32 on the other side of s
    halfway = (s != r64) & (s - r64 == other.astype(np.float64) - s) & (err != 0)
    toward = np.where(err > 0, np.maximum(r, other), np.minimum(r, other))
    return np.where(halfway, toward, r)


# ---- the separable plan ----------------------------------------------------------------------

# float32 mul + add instead of FMA moves a result by at most 7 * 2^-16 = 1.07e-4 (values
# < 256, half-ulp roundings: 1.5 * 2^-16 per horizontal value, 4 * 2^-16 through f1 - f0, 1.5
# * 2^-16 in the vertical step); a fast result within 2^-13 = 1.22e-4 of k + 0.5 is redone
# exactly, all others round as OpenCV 5's do
_NEAR_HALF = np.float32(0.5 - 2.0 ** -13)


@dataclass(frozen=True)
class _Axis:
    """One axis of the warp: the output range [lo, hi) that touches the image (outside: pad).

    Per output position in the range: the lower source index and the float32 weight of the
    next one (OpenCV 5's fractional part).
    """

    lo: int
    hi: int
    index: np.ndarray
    frac: np.ndarray


def _axis(coords, n):
    """Build an _Axis from the float32 source coordinate of each output position."""
    ix = np.floor(coords).astype(np.int64)
    frac = (coords - ix.astype(np.float32)).astype(np.float32)
    touch = np.flatnonzero((ix >= -1) & (ix < n))  # ix or ix + 1 inside the image
    if touch.size == 0:
        return _Axis(0, 0, ix[:0], frac[:0])
    lo, hi = int(touch[0]), int(touch[-1]) + 1
    return _Axis(lo, hi, ix[lo:hi], frac[lo:hi])


def _gather_map(xs, ys):
    """CV_16SC2 map of integer source pixels: cv2.remap(INTER_NEAREST) then only copies."""
    grid = np.empty((len(ys), len(xs), 2), np.int16)
    grid[..., 0] = np.clip(xs, -2, 32766)[None, :]  # -2 and beyond the image: pad
    grid[..., 1] = np.clip(ys, -2, 32766)[:, None]
    return grid


def _remap(image, grid, dst=None):
    return cv2.remap(image, grid, None, cv2.INTER_NEAREST, dst=dst,
                     borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE))


_WORKSPACE = threading.local()


def _buffer(tag, shape, dtype=np.float32):
    """A reused scratch array of this thread: fresh large arrays cost page faults per call."""
    buffers = _WORKSPACE.__dict__.setdefault('buffers', {})
    key = (tag, shape, np.dtype(dtype).str)
    if key not in buffers:
        if len(buffers) > 32:  # many sizes in turn: start over rather than grow
            buffers.clear()
        buffers[key] = np.empty(shape, dtype)
    return buffers[key]


@dataclass(frozen=True)
class WarpPlan:
    """Cached tables of one (image size, input size) letterbox.

    ``copy_map``, when the source positions are whole pixels, gathers the region directly.
    Otherwise the horizontal pass reads the source rows that ``row_maps`` gather (one map per
    neighbour column; the last row is all pad) and output row i of the region interpolates
    between pass rows ``r0[i]`` and ``r1[i]``. ``special`` holds the output rows whose source
    y varies along the row (float32 y per column): they are computed per pixel.
    """

    cols: _Axis
    rows: _Axis
    copy_map: object
    row_maps: tuple
    r0: np.ndarray
    r1: np.ndarray
    f32_exact: bool  # float32 mul/add already equal the FMAs (few-bit dyadic weights)
    special: dict

    @property
    def frac3(self):
        """The column weights repeated for the 3 channels (cached on first use)."""
        cached = self.__dict__.get('_frac3')
        if cached is None:
            cached = np.repeat(self.cols.frac, 3).astype(np.float32)
            object.__setattr__(self, '_frac3', cached)
        return cached

    def apply(self, image, out):
        """Fill the (3, H, W) float32 ``out`` with the letterboxed ``image``."""
        c, r = self.cols, self.rows
        _fill_outside(out, r.lo, r.hi, c.lo, c.hi)
        region = out[:, r.lo:r.hi, c.lo:c.hi].transpose(1, 2, 0)
        if region.size == 0:  # the image maps between two output pixels: all pad
            return out
        if self.copy_map is not None:
            shape = self.copy_map.shape[:2] + (3,)
            np.copyto(region, _remap(image, self.copy_map, _buffer('copy', shape, np.uint8)))
        else:
            self._interpolate(image, region)
        for y, sy in self.special.items():
            region[y - r.lo] = _exact_row(image, sy, c)
        return out

    def _interpolate(self, image, region):
        shape = self.row_maps[0].shape[:2] + (3,)
        p = [_buffer(f'p{i}', shape, np.uint8) for i in range(len(self.row_maps))]
        h_rows = _buffer('h', shape)
        _in_halves(self._horizontal, shape[0], image, p, h_rows)
        f, rounded = _buffer('f', region.shape), _buffer('rounded', region.shape)
        d, near = _buffer('d', region.shape), _buffer('near', region.shape, bool)
        _in_halves(self._vertical, region.shape[0], image, h_rows, f, d, rounded, near,
                   region)

    def _horizontal(self, rows, image, p, h_rows):
        """Pass rows ``rows``: float32 p0 + ax * (p1 - p0) (mul and add, not yet exact)."""
        for grid, dst in zip(self.row_maps, p):
            _remap(image, grid[rows], dst[rows])
        h = h_rows[rows]
        if len(p) == 1:
            np.copyto(h, p[0][rows])
            return
        # rows of W * 3 values, the weights repeated per channel: numpy runs the multiply along
        # the contiguous axis (twice as fast as broadcasting a (1, W, 1) weight); same values
        n = h.shape[0]
        flat, p0 = h.reshape(n, -1), p[0][rows].reshape(n, -1)
        np.subtract(p[1][rows].reshape(n, -1), p0, out=flat, dtype=np.float32)
        flat *= self.frac3
        np.add(flat, p0, out=flat, dtype=np.float32)

    def _vertical(self, rows, image, h_rows, f, d, rounded, near, region):
        """Region rows ``rows``: rint(f0 + ay * (f1 - f0)), near-ties redone exactly."""
        f, d, rounded, near = f[rows], d[rows], rounded[rows], near[rows]
        np.take(h_rows, self.r0[rows], axis=0, out=f)
        if self.rows.frac.any():
            np.take(h_rows, self.r1[rows], axis=0, out=d)
            d -= f
            d *= self.rows.frac[rows, None, None]
            f += d
        np.rint(f, out=rounded)
        if not self.f32_exact:
            self._fix_near_half(image, f, rounded, near, rows.start)
        np.copyto(region[rows], rounded)

    def _fix_near_half(self, image, f, rounded, near, y0):
        """Redo exactly the pixels whose fast value is close to k + 0.5 (overwrites f).

        ``f``, ``rounded`` and ``near`` are the region's rows from ``y0`` on.
        """
        f -= rounded
        np.abs(f, out=f)
        flat = np.flatnonzero(np.greater_equal(f, _NEAR_HALF, out=near))
        if flat.size:
            iy, ix, ch = np.unravel_index(flat, f.shape)
            iy += y0
            rounded.reshape(-1)[flat] = _exact_pixels(
                image, self.rows.index[iy], self.rows.frac[iy], self.cols.index[ix],
                self.cols.frac[ix], ch)


_POOL = {}  # process id -> its one helper thread, made on first use


def _in_halves(work, n, *args):
    """work(slice, *args) on rows [0, n) in two halves, the second on a helper thread.

    numpy's loops and cv2.remap release the GIL, so two CPU cores share the passes (as
    cv2.warpAffine's own threads did); small jobs run on the calling thread alone.
    """
    if n < 64 or (os.cpu_count() or 1) < 2:
        work(slice(0, n), *args)
        return
    pool = _POOL.get(os.getpid())
    if pool is None:  # first use in this process (a forked child has no helper thread)
        pool = _POOL[os.getpid()] = ThreadPoolExecutor(1, thread_name_prefix='letterbox')
    half = n // 2
    second = pool.submit(work, slice(half, n), *args)
    work(slice(0, half), *args)
    second.result()


def _exact_pixels(image, iy, ay, ix, ax, ch):
    """OpenCV 5's value of single pixels: float32 FMAs, rounded half to even."""
    h, w = image.shape[:2]

    def pixel(ys, xs):
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        res = image[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1), ch].astype(np.float32)
        res[~inside] = PAD_VALUE
        return res

    def h_row(ys):
        p00 = pixel(ys, ix)
        return fma32(ax, pixel(ys, ix + 1) - p00, p00)

    f0 = h_row(iy)
    return np.rint(fma32(ay, h_row(iy + 1) - f0, f0))


def _fill_outside(out, y0, y1, x0, x1):
    """Pad value in ``out`` outside rows [y0, y1) x columns [x0, x1)."""
    out[:, :y0] = PAD_VALUE
    out[:, y1:] = PAD_VALUE
    out[:, y0:y1, :x0] = PAD_VALUE
    out[:, y0:y1, x1:] = PAD_VALUE


def _exact_row(image, sy, cols):
    """One output row whose source y varies along x (tiny off-diagonal term), per pixel."""
    sy = sy[cols.lo:cols.hi]
    iy = np.floor(sy).astype(np.int64)
    ay = (sy - iy.astype(np.float32)).astype(np.float32)
    n = len(sy)
    iy, ay, ix, ax = (np.repeat(v, 3) for v in (iy, ay, cols.index, cols.frac))
    return _exact_pixels(image, iy, ay, ix, ax, np.tile(np.arange(3), n)).reshape(n, 3)


@dataclass(frozen=True)
class PerPixelPlan:
    """Every output pixel from its own float32 source position (sx, sy: (H, W) each)."""

    sx: np.ndarray
    sy: np.ndarray

    def apply(self, image, out):
        """Fill the (3, H, W) float32 ``out`` with the letterboxed ``image``."""
        ix, iy = np.floor(self.sx).astype(np.int64), np.floor(self.sy).astype(np.int64)
        ax = (self.sx - ix.astype(np.float32)).astype(np.float32)
        ay = (self.sy - iy.astype(np.float32)).astype(np.float32)
        for ch in range(3):
            out[ch] = _exact_pixels(image, iy.ravel(), ay.ravel(), ix.ravel(), ax.ravel(),
                                    np.full(ix.size, ch)).reshape(ix.shape)
        return out


@lru_cache(maxsize=32)
def warp_plan(image_hw, input_wh):
    """The cached WarpPlan that letterboxes an (h, w) image into an input of size (W, H)."""
    h, w = image_hw
    in_w, in_h = input_wh
    m = inverse_matrix_f32(mmpose_warp_matrix(image_hw, input_wh))
    xs = np.arange(in_w, dtype=np.float32)
    ys = np.arange(in_h, dtype=np.float32)
    # OpenCV 5 (SIMD path): per row M_x = fl(fl(y*M1) + M2), M_y = fl(fl(y*M4) + M5), then per
    # pixel x = fma(M0, x, M_x), y = fma(M3, x, M_y)
    mx = (ys * m[1]).astype(np.float32) + m[2]
    my = (ys * m[4]).astype(np.float32) + m[5]
    if np.any(mx != mx[0]):  # not seen for 'fit' matrices (3000 random sizes): exact, slow
        return PerPixelPlan(fma32(m[0], xs[None, :], mx[:, None]),
                            fma32(m[3], xs[None, :], my[:, None]))
    cols = _axis(fma32(m[0], xs, mx[0]), w)
    rows = _axis(my, h)
    sy_grid = fma32(m[3], xs[None, :], my[rows.lo:rows.hi, None])
    special = {rows.lo + int(i): sy_grid[i] for i in
               np.flatnonzero(np.any(sy_grid != my[rows.lo:rows.hi, None], axis=1))}
    if not cols.frac.any() and not rows.frac.any():  # whole pixels: one gather
        special = {y: sy for y, sy in special.items()
                   if not _same_whole_pixels(sy[cols.lo:cols.hi], rows.index[y - rows.lo])}
        return WarpPlan(cols, rows, _gather_map(cols.index, rows.index), (), None, None, True,
                        special)
    # source rows the horizontal pass needs, then -2: a row of pad value (remap's border)
    needed = np.unique(np.concatenate([rows.index, rows.index + 1]))
    needed = np.append(needed[(needed >= 0) & (needed < h)], -2)
    where = {int(v): i for i, v in enumerate(needed)}

    def position(idx):
        return np.array([where.get(int(v), len(needed) - 1) for v in idx], np.int64)

    row_maps = tuple(_gather_map(cols.index + dx, needed)
                     for dx in ((0, 1) if cols.frac.any() else (0,)))
    return WarpPlan(cols, rows, None, row_maps, position(rows.index), position(rows.index + 1),
                    _few_bit_weights(cols.frac) and _few_bit_weights(rows.frac), special)


def _same_whole_pixels(sy, iy):
    """True when source ys ``sy`` give the whole-pixel row ``iy``'s values (integer inputs).

    A y just above ``iy`` (weight below 1/1020) keeps ``rint`` of row ``iy``; a y just below
    it, whose weight rounds to 1.0, gives ``f0 + (f1 - f0)`` = row ``iy`` exactly.
    """
    low = np.floor(sy).astype(np.int64)
    frac = (sy - low.astype(np.float32)).astype(np.float32)
    return bool(np.all(((low == iy) & (frac < 0.25 / 255)) | ((low == iy - 1) & (frac == 1))))


def _few_bit_weights(frac, bits=7):
    """True when every weight is a multiple of 2**-bits (<= 7 bits).

    Then p00 + a * (p01 - p00) needs <= 16 bits and f0 + b * (f1 - f0) <= 24: float32 mul
    and add are exact, as the FMAs are (e.g. 720x480 -> 640, scale 8/9).
    """
    scaled = frac.astype(np.float64) * 2.0 ** bits
    return bool(np.all(scaled == np.floor(scaled)))
