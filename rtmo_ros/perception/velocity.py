"""Per-track velocity [m/s] of the 3D body position, over header time.

The velocity is the slope of a least-squares line through the track's valid positions of the
last ``window_s`` seconds (per axis). Against a two-point difference it averages the depth noise
of every sample in the window (with 2 cm of position noise at 30 Hz, a 0.5 s window gives
~4 cm/s of velocity noise instead of ~85 cm/s), at the price of reporting the mean velocity of
the window, i.e. ~window_s / 2 late. Stamps, not frame counts, set the time, so dropped frames
only mean fewer samples.

Frame: the camera optical frame (x right, y down, z forward). On a moving robot the velocity
includes the robot's own motion (someone standing still in front of a robot driving forward at
1 m/s moves at -1 m/s in z); transform the positions into a world-fixed frame first (tf2) for
a velocity over ground.
"""
import numpy as np


class VelocityEstimator:
    """Velocity (N, 3) per track id; NaN until two valid positions, NaN for id -1."""

    def __init__(self, window_s=0.5):
        if not window_s > 0:
            raise ValueError(f'velocity window_s {window_s} must be > 0 (seconds)')
        self.window_s = window_s
        self.reset()

    def reset(self):
        self._history = {}      # track id -> ([stamp], [xyz]) of valid positions, oldest first
        self._stamp = None

    def update(self, track_ids, positions, stamp_s):
        """Add ``positions`` (N, 3) [m] (NaN = unknown) of ``track_ids`` (N,) at ``stamp_s``."""
        if self._stamp is not None and stamp_s < self._stamp:
            self.reset()
        self._stamp = stamp_s
        track_ids = np.asarray(track_ids)
        positions = np.asarray(positions, np.float64).reshape(-1, 3)
        for track_id, xyz in zip(track_ids.tolist(), positions):
            if track_id >= 0 and np.isfinite(xyz).all():
                times, points = self._history.setdefault(track_id, ([], []))
                times.append(stamp_s)
                points.append(xyz)
        self._prune(stamp_s - self.window_s)
        return self._slopes(track_ids, stamp_s)

    def _prune(self, oldest):
        for track_id in list(self._history):
            times, points = self._history[track_id]
            drop = sum(t < oldest - 1e-9 for t in times)   # 1e-9: stamps carry float noise
            del times[:drop], points[:drop]
            if not times:
                del self._history[track_id]

    def _slopes(self, track_ids, stamp_s):
        """Least-squares slopes for every id at once (bincount over a flat sample list)."""
        velocity = np.full((len(track_ids), 3), np.nan)
        ids = track_ids.tolist()
        rows = [i for i, track_id in enumerate(ids) if track_id in self._history]
        if not rows:
            return velocity
        samples = [self._history[ids[i]] for i in rows]
        counts = np.array([len(times) for times, _ in samples])
        group = np.repeat(np.arange(len(rows)), counts)
        t = np.concatenate([times for times, _ in samples]) - stamp_s   # small: no cancellation
        x = np.concatenate([points for _, points in samples])
        t_mean = np.bincount(group, t) / counts
        x_mean = np.stack([np.bincount(group, x[:, j]) for j in range(3)], 1) / counts[:, None]
        dt, dx = t - t_mean[group], x - x_mean[group]
        stt = np.bincount(group, dt * dt)
        stx = np.stack([np.bincount(group, dt * dx[:, j]) for j in range(3)], 1)
        ok = stt > 0                      # at least two distinct stamps
        velocity[np.asarray(rows)[ok]] = stx[ok] / stt[ok, None]
        return velocity
