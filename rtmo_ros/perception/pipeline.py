"""People over time and in 3D: tracking, smoothing, depth lifting and velocity, in one call.

One :class:`PersonPipeline` per image stream, shared by the node and the bag tools, so both
publish the same numbers. Order within a frame:

1. track the boxes (ids, -1 when untracked);
2. look up each keypoint's robust depth at its raw pixel (the measurement) and apply the
   rejection rules of :mod:`rtmo_ros.perception.depth`;
3. smooth the pixels and, separately, those depths (One-Euro, per track id and keypoint);
4. back-project each smoothed pixel with its smoothed depth (the 3D point stays on the ray of
   the published 2D keypoint) and take the body position from the torso;
5. velocity from the positions over header time.
"""
from dataclasses import dataclass, field

import numpy as np

from .depth import DepthConfig, body_position, keypoint_depths
from .one_euro import KeypointSmoother
from .tracker import Tracker
from .velocity import VelocityEstimator


@dataclass(frozen=True)
class PerceptionConfig:
    """Settings of :class:`PersonPipeline`; smoothing needs tracking (its state is per id)."""

    tracking: bool = True
    smoothing: bool = True
    # score that starts a track; below 0.5 it also lowers ByteTrack's high-score pass
    track_new_thr: float = 0.5
    track_buffer_s: float = 1.0         # s of header time a lost track lives
    smoothing_min_cutoff: float = 1.0   # Hz, a still keypoint
    # cutoff rise per body height/s of keypoint speed (speeds are divided by the box height,
    # so near and far people at any resolution are smoothed alike); 10 measured on the demo
    # bag: AP 0.604 against 0.689 raw (a still keypoint keeps 1/5 of its jitter), where 2
    # gave 0.161 and 5 0.451: lag costs more OKS than jitter does
    smoothing_beta: float = 10.0
    smoothing_depth_beta: float = 4.0   # 1/m: the same for keypoint depths
    smoothing_d_cutoff: float = 1.0     # Hz, of the speed estimate
    velocity_window_s: float = 0.5      # s of positions in the least-squares velocity
    depth: DepthConfig = field(default_factory=DepthConfig)


@dataclass
class Tracked:
    """One frame's people, aligned with the ``Poses`` they came from (N may be 0).

    track_ids:    (N,) int64, -1 = untracked (tracking off, or a low score with no track)
    keypoints:    (N, K, 2) float32 px, smoothed when smoothing is on, else the raw ones
    keypoints_3d: (N, K, 3) float64 m, camera optical frame; NaN without depth or when rejected
    position:     (N, 3) float64 m, torso front surface (see ``depth.body_position``); NaN
    velocity:     (N, 3) float64 m/s of ``position``, camera frame (includes the robot's motion)
    reset:        True when the stamps went backwards this frame (every state was reset)
    """

    track_ids: np.ndarray
    keypoints: np.ndarray
    keypoints_3d: np.ndarray
    position: np.ndarray
    velocity: np.ndarray
    reset: bool

    def __len__(self):
        return len(self.track_ids)


class PersonPipeline:
    """Tracker + One-Euro smoother + depth lifting + velocity for one image stream."""

    def __init__(self, cfg=None):
        self.cfg = cfg = cfg or PerceptionConfig()
        self.tracker = Tracker(high_thr=min(0.5, cfg.track_new_thr), new_thr=cfg.track_new_thr,
                               buffer_s=cfg.track_buffer_s)
        self.smoother = KeypointSmoother(cfg.smoothing_min_cutoff, cfg.smoothing_beta,
                                         cfg.smoothing_d_cutoff, cfg.smoothing_depth_beta,
                                         forget_s=cfg.track_buffer_s)
        self.velocity = VelocityEstimator(cfg.velocity_window_s)
        self.resets = 0
        self._stamp = None

    def update(self, poses, stamp_s, depth_m=None, camera=None):
        """People of ``poses`` at header time ``stamp_s`` [s] -> :class:`Tracked`.

        ``depth_m``: (H, W) float32 metres, NaN where invalid (``depth.depth_to_metres``),
        registered to the image of ``poses``; ``camera``: that image's ``PinholeCamera``.
        """
        if depth_m is not None and camera is None:
            raise ValueError('a depth image needs the camera of the colour image: pass '
                             'camera=PinholeCamera.from_msg(camera_info)')
        reset = self._stamp is not None and stamp_s < self._stamp
        self._stamp = stamp_s
        self.resets += reset
        n, k = poses.keypoints.shape[:2]
        ids = np.full(n, -1, np.int64)
        if self.cfg.tracking:
            ids = self.tracker.update(poses.boxes, poses.scores, stamp_s)
        depths = None
        if depth_m is not None:
            depths = keypoint_depths(poses.keypoints, poses.keypoint_scores, depth_m, camera,
                                     self.cfg.depth)
        keypoints = poses.keypoints
        if self.cfg.smoothing and self.cfg.tracking:
            heights = poses.boxes[:, 3] - poses.boxes[:, 1]  # speeds in body heights per second
            keypoints, depths = self.smoother.update(ids, keypoints, depths, stamp_s, heights)
        keypoints_3d, position = np.full((n, k, 3), np.nan), np.full((n, 3), np.nan)
        if depths is not None:
            keypoints_3d = camera.backproject(keypoints, depths)
            position = body_position(keypoints, poses.keypoint_scores, depths, camera,
                                     self.cfg.depth)
        velocity = self.velocity.update(ids, position, stamp_s)
        return Tracked(ids, np.asarray(keypoints, np.float32), keypoints_3d, position, velocity,
                       reset)
