"""Multi-person tracking on RTMO's boxes: ByteTrack's two passes, timed by header stamps.

Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box", ECCV 2022:
high-score detections are matched to every live track first; low-score ones (a person half
hidden, blurred) are then matched to the tracks left over, with a stricter IoU, so they continue
a track but never start one. ByteTrack's code offers the second pass only the tracks matched in
the previous frame; we offer every live one (the paper's Algorithm 1), because with dropped
frames "the previous frame" means little, and someone who reappears half hidden from behind
another person should get their id back. As in ByteTrack's code (``fuse_score``), the first
pass ranks pairs by IoU times the detection score: when the model reports the same person twice
(a sharp box and a blurred one that escaped NMS), the track keeps the sharp one instead of
being dragged off by the other and leaving the sharp one to start a new id (measured on the
demo's crossing walkers: one id switch without it, none with it).

Why our own ~180 lines rather than a library: supervision's ``ByteTrack`` (deprecated since
0.28 in favour of the ``trackers`` package) and BoxMOT both count a lost track's lifetime in
frames (``lost_track_buffer`` / ``track_buffer`` at a nominal ``frame_rate``) and step their
Kalman filter one frame at a time whatever time has passed. Our node keeps only the newest
image while the model is busy, and cameras drop frames, so frames are not time: here the motion
model steps by the header-stamp difference and a lost track lives ``buffer_s`` seconds of
header time. BoxMOT also pulls in torch, torchvision, pandas and scikit-learn, pins numpy 1.26
(we run numpy 2) and is AGPL-3.0 (we are Apache-2.0). This needs only scipy's
``linear_sum_assignment``.

Motion model: a Kalman filter with constant velocity on the box centre and size (cx, cy, w, h),
ByteTrack's state without its aspect ratio. Each coordinate is an independent (value, rate)
pair with a 2x2 covariance, which keeps it vectorised over tracks in a few lines. A Kalman
filter rather than an alpha-beta one because the gain follows dt: after a dropped frame or an
occlusion the prediction is trusted less and the next detection more, and a new track learns
its velocity from its second detection instead of creeping up to it with fixed gains. Noise
scales with the box height, as in ByteTrack, so near and far people behave alike.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

from rtmo_ros.engine.postprocess import box_iou  # noqa: F401 - tracker.box_iou, public

# standard deviations, in box heights (ByteTrack: 1/20 of the height for positions)
_MEASUREMENT_STD = 0.05
_INIT_RATE_STD = 1.0   # per s: a walking person crosses about one body height per second
_ACCEL_STD = 0.5       # per s^1.5: white-noise acceleration density, a person turning or stopping


class Tracker:
    """ByteTrack-style tracker; ``update`` gives one int64 id per detection, -1 = untracked.

    Ids start at 0 and are never reused within the tracker's life (resets included). Stamps
    going backwards (a bag looping) reset the tracker; ``resets`` counts those resets.
    ``new_thr`` below ``high_thr`` acts as ``high_thr``: only high-score detections start tracks.
    """

    def __init__(self, high_thr=0.5, low_thr=0.1, new_thr=0.5, match_iou=0.2,
                 low_match_iou=0.5, buffer_s=1.0):
        if not 0 <= low_thr <= high_thr:
            raise ValueError(f'Tracker low_thr {low_thr} must be in [0, high_thr {high_thr}]')
        if buffer_s < 0:
            raise ValueError(f'Tracker buffer_s {buffer_s} must be >= 0 (seconds)')
        self.high_thr, self.low_thr, self.new_thr = high_thr, low_thr, new_thr
        self.match_iou, self.low_match_iou = match_iou, low_match_iou   # ByteTrack: 0.2, 0.5
        self.buffer_s = buffer_s
        self.resets = 0
        self._next_id = 0
        self.reset()

    def reset(self):
        """Forget every track (ids keep counting up)."""
        self._ids = np.zeros(0, np.int64)
        self._mean = np.zeros((0, 4, 2))     # (cx, cy, w, h) x (value, rate per s)
        self._cov = np.zeros((0, 4, 3))      # per coordinate: var(value), cov, var(rate)
        self._seen = np.zeros(0)             # stamp of the last matched detection
        self._stamp = None

    def update(self, boxes, scores, stamp_s):
        """Track ``boxes`` (N, 4) x1, y1, x2, y2 px with ``scores`` (N,) at ``stamp_s`` [s].

        Returns the track ids (N,) int64, aligned with the detections.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if self._stamp is not None and stamp_s < self._stamp:
            self.reset()
            self.resets += 1
        dt = 0.0 if self._stamp is None else stamp_s - self._stamp
        self._stamp = stamp_s
        self._keep(~(stamp_s - self._seen > self.buffer_s))
        self._predict(dt)
        ids = np.full(len(boxes), -1, np.int64)
        matched = self._associate(boxes, scores, ids)
        self._seen[matched] = stamp_s
        self._mean[~matched, 2:, 1] = 0.0     # a lost box keeps its size (ByteTrack too)
        fresh = (ids < 0) & (scores >= max(self.new_thr, self.high_thr))
        ids[fresh] = self._start(boxes[fresh], stamp_s)
        return ids

    def _associate(self, boxes, scores, ids):
        """Both ByteTrack passes; fills ``ids`` and returns which tracks were matched."""
        predicted = _to_corners(self._mean[:, :, 0])
        matched = np.zeros(len(self._ids), bool)
        high = np.flatnonzero(scores >= self.high_thr)
        low = np.flatnonzero((scores >= self.low_thr) & (scores < self.high_thr))
        for dets, floor, fuse in ((high, self.match_iou, True), (low, self.low_match_iou, False)):
            tracks = np.flatnonzero(~matched)
            d, t = _match(boxes[dets], predicted[tracks], floor,
                          scores[dets] if fuse else None)
            if len(d) == 0:
                continue
            d, t = dets[d], tracks[t]
            self._correct(t, _to_centre(boxes[d]))
            ids[d] = self._ids[t]
            matched[t] = True
        return matched

    def _predict(self, dt):
        (p, v), (a, b, c) = np.moveaxis(self._mean, -1, 0), np.moveaxis(self._cov, -1, 0)
        q = (_ACCEL_STD * self._mean[:, 3:, 0]) ** 2
        self._mean = np.stack([p + v * dt, v], axis=-1)
        self._mean[:, 2:, 0] = np.maximum(self._mean[:, 2:, 0], 1.0)   # no negative sizes
        self._cov = np.stack([a + 2 * b * dt + c * dt ** 2 + q * dt ** 3 / 3,
                              b + c * dt + q * dt ** 2 / 2, c + q * dt], axis=-1)

    def _correct(self, rows, z):
        p, v = np.moveaxis(self._mean[rows], -1, 0)
        a, b, c = np.moveaxis(self._cov[rows], -1, 0)
        r = (_MEASUREMENT_STD * z[:, 3:]) ** 2
        gain_p, gain_v = a / (a + r), b / (a + r)
        residual = z - p
        self._mean[rows] = np.stack([p + gain_p * residual, v + gain_v * residual], axis=-1)
        self._cov[rows] = np.stack([(1 - gain_p) * a, (1 - gain_p) * b, c - gain_v * b], axis=-1)

    def _start(self, boxes, stamp_s):
        n = len(boxes)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        z = _to_centre(boxes)
        h = np.maximum(z[:, 3:], 1.0)
        mean = np.stack([z, np.zeros_like(z)], axis=-1)
        cov = np.stack([(_MEASUREMENT_STD * h) ** 2 * np.ones_like(z), np.zeros_like(z),
                        (_INIT_RATE_STD * h) ** 2 * np.ones_like(z)], axis=-1)
        self._ids = np.concatenate([self._ids, ids])
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._seen = np.concatenate([self._seen, np.full(n, stamp_s)])
        return ids

    def _keep(self, keep):
        """Drop the tracks where ``keep`` is False (unseen for longer than buffer_s)."""
        self._ids, self._mean, self._cov = self._ids[keep], self._mean[keep], self._cov[keep]
        self._seen = self._seen[keep]


def _match(det_boxes, track_boxes, floor, det_scores=None):
    """Matched indices (d, t): most pairs with IoU >= floor, then the highest total IoU.

    A pair below the floor costs more than any set of pairs above it, so the solver uses one
    only when forced to (and it is dropped), as lapjv's cost_limit does in ByteTrack.
    """
    if len(det_boxes) == 0 or len(track_boxes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    iou = box_iou(det_boxes, track_boxes)
    allowed = iou >= floor
    similarity = iou if det_scores is None else iou * det_scores[:, None]
    cost = np.where(allowed, 1.0 - similarity, float(min(iou.shape) + 1))
    d, t = linear_sum_assignment(cost)
    keep = allowed[d, t]
    return d[keep], t[keep]


def _to_centre(boxes):
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)


def _to_corners(state):
    return np.concatenate([state[:, :2] - state[:, 2:] / 2, state[:, :2] + state[:, 2:] / 2], 1)
