"""The One-Euro filter, one state per (track id, keypoint), timed by header stamps.

Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter for Noisy Input
in Interactive Systems", CHI 2012. For a sample x at time t, dt = t - t_prev:

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))    first-order low-pass with cutoff fc [Hz]
    dx  = (x - x_prev) / dt                    x_prev: the previous raw sample (as in the
    edx = edx_prev + alpha(d_cutoff) (dx - edx_prev)     authors' reference code)
    fc  = min_cutoff + beta |edx|
    x^  = x^_prev + alpha(fc) (x - x^_prev)

A still keypoint is smoothed hard (cutoff min_cutoff), a moving one lightly (the cutoff rises
with its speed), so jitter drops without lag on fast motion. dt comes from the stamps, so a
dropped frame is a longer step, not a wrong one.
"""
import math

import numpy as np


def smoothing_factor(cutoff, dt):
    """Return the alpha of a first-order low-pass with ``cutoff`` [Hz] after ``dt`` [s]."""
    return 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))


class OneEuro:
    """One-Euro filters for many signals of one shape, one set per key (a track id).

    Each element keeps its own previous time, so a NaN sample (skipped, state untouched) does
    not distort the next step's dt. A key not given for more than ``forget_s`` is dropped;
    stamps going backwards drop every key.
    """

    def __init__(self, shape, min_cutoff, beta, d_cutoff, forget_s):
        if not (min_cutoff > 0 and d_cutoff > 0 and beta >= 0):
            raise ValueError(f'One-Euro min_cutoff {min_cutoff} and d_cutoff {d_cutoff} must be '
                             f'> 0 Hz and beta {beta} >= 0')
        self.shape = tuple(shape)
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.forget_s = forget_s
        self.reset()

    def reset(self):
        self._rows = {}                              # key -> row of the state arrays
        self._seen = np.zeros(0)                     # stamp each key was last given
        self._x, self._dx, self._raw = (np.zeros((0,) + self.shape) for _ in range(3))
        self._t = np.zeros((0,) + self.shape)        # per element; NaN = no sample yet
        self._stamp = None

    def __call__(self, keys, x, stamp_s, scale=None):
        """Filter ``x`` (M, *shape) for ``keys`` (M,) unique at ``stamp_s``; NaN stays NaN.

        ``scale`` (M,): the unit of each key's speed in the cutoff (``beta * |speed| / scale``),
        e.g. a person's box height, so that near and far people, at any image size, are
        smoothed alike; None: 1.
        """
        if self._stamp is not None and stamp_s < self._stamp:
            self.reset()
        self._stamp = stamp_s
        self._forget(stamp_s)
        rows = np.array([self._row(key) for key in keys], np.int64)
        self._seen[rows] = stamp_s
        scale = np.ones(len(rows)) if scale is None else np.maximum(np.asarray(scale, float),
                                                                     1e-9)
        scale = scale.reshape((-1,) + (1,) * len(self.shape))
        out, update, edx = self._step(rows, np.asarray(x, np.float64), stamp_s, scale)
        for state, value in ((self._x, out), (self._raw, x), (self._dx, edx),
                             (self._t, stamp_s)):
            state[rows] = np.where(update, value, state[rows])
        return out

    def _step(self, rows, x, stamp_s, scale):
        """Filtered output, which elements update their state, and the filtered speed."""
        t, x_hat, dx_hat, raw = self._t[rows], self._x[rows], self._dx[rows], self._raw[rows]
        valid, fresh = ~np.isnan(x), np.isnan(t)
        dt = stamp_s - t
        step = valid & ~fresh & (dt > 0)
        dt = np.where(step, dt, 1.0)                 # placeholder where no step is taken
        dx = (x - raw) / dt
        edx = dx_hat + smoothing_factor(self.d_cutoff, dt) * (dx - dx_hat)
        cutoff = self.min_cutoff + self.beta * np.abs(edx) / scale
        stepped = x_hat + smoothing_factor(cutoff, dt) * (x - x_hat)
        # first sample passes through; a repeated stamp repeats the last output
        out = np.where(step, stepped, np.where(fresh, x, x_hat))
        out[~valid] = np.nan
        return out, valid & (fresh | step), np.where(fresh, 0.0, edx)

    def _row(self, key):
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._seen)
            self._seen = np.append(self._seen, np.nan)
            self._x, self._dx, self._raw, self._t = (
                np.concatenate([a, np.full((1,) + self.shape, np.nan)])
                for a in (self._x, self._dx, self._raw, self._t))
        return row

    def _forget(self, stamp_s):
        keep = ~(stamp_s - self._seen > self.forget_s)
        if keep.all():
            return
        keys = sorted(self._rows, key=self._rows.get)            # in row order
        self._rows = {key: i for i, key in enumerate(k for k, ok in zip(keys, keep) if ok)}
        self._seen, self._x, self._dx, self._raw, self._t = (
            a[keep] for a in (self._seen, self._x, self._dx, self._raw, self._t))


class KeypointSmoother:
    """One-Euro smoothing of tracked people's keypoints (px) and keypoint depths (m).

    Defaults, measured on a simulated 30 Hz stream: a still keypoint with 2 px of jitter keeps
    ~1/8 of its variance, one moving at 300 px/s lags ~7 px (23 ms). ``beta`` is in 1/px (it
    multiplies a speed in px/s), so depth, in metres, has its own ``depth_beta`` (1/m): ~200 times
    larger, as a person at 3 m seen with a 600 px focal length moves ~200 px per metre (2 cm of
    depth jitter keeps ~1/6 of its variance, 1 m/s lags ~3 cm). Depth has its own state, so the
    3D point back-projected from the smoothed pixel and the smoothed depth stays on the ray of the
    published 2D keypoint.
    """

    def __init__(self, min_cutoff=1.0, beta=0.02, d_cutoff=1.0, depth_beta=4.0, forget_s=1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.depth_beta, self.forget_s = depth_beta, forget_s
        self._xy = self._depth = None

    def update(self, track_ids, keypoints, depths, stamp_s, scales=None):
        """Smooth ``keypoints`` (N, K, 2) and ``depths`` (N, K) or None of ``track_ids`` (N,).

        ``scales`` (N,): each person's size in px (box height) that keypoint speeds are measured
        in (``beta`` is then per size/s); None: speeds in px/s.

        Returns (keypoints, depths or None), aligned with the input. Ids of -1 (untracked) pass
        through unfiltered; the other ids must be unique.
        """
        track_ids = np.asarray(track_ids)
        tracked = track_ids >= 0
        keys = track_ids[tracked].tolist()
        if len(set(keys)) != len(keys):
            raise ValueError(f'track ids must be unique in a frame, got {keys}')
        k = keypoints.shape[1]
        self._xy = self._bank(self._xy, (k, 2), self.beta)
        out_xy = np.array(keypoints, np.float64)
        unit = None if scales is None else np.asarray(scales, np.float64)[tracked]
        out_xy[tracked] = self._xy(keys, out_xy[tracked], stamp_s, unit)
        if depths is None:
            return out_xy, None
        self._depth = self._bank(self._depth, (k,), self.depth_beta)
        out_z = np.array(depths, np.float64)
        out_z[tracked] = self._depth(keys, out_z[tracked], stamp_s)
        return out_xy, out_z

    def _bank(self, bank, shape, beta):
        if bank is not None and bank.shape == shape:
            return bank
        return OneEuro(shape, self.min_cutoff, beta, self.d_cutoff, self.forget_s)
