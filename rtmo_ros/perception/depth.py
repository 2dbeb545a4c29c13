"""Depth lifting: 2D keypoints + a registered depth image -> 3D keypoints and a body position.

Conventions (REP 118): a depth image holds, per pixel, the z coordinate along the optical axis
(not the range), as ``16UC1`` millimetres (0 = no reading) or ``32FC1`` metres (NaN, inf or 0 =
no reading). :func:`depth_to_metres` turns both into float32 metres with NaN where invalid.

The depth image must be registered to the image the keypoints come from (e.g. RealSense
``aligned_depth_to_color``): same optical frame and field of view. A different resolution is
scaled to the colour image's; ``camera`` describes the colour image.

Rules, per keypoint (all vectorised over people x keypoints):

1. robust depth = median of the valid pixels (finite, within [depth_min, depth_max]) of a
   ``patch`` x ``patch`` window around the rounded pixel, truncated at the image edges (pixels
   outside do not count, so an edge keypoint is not biased towards the edge pixel); none valid
   -> NaN;
2. a keypoint scoring below ``keypoint_thr`` -> NaN (RTMO still places occluded joints);
3. the person's reference depth is the median of its torso keypoints' depths (shoulders and
   hips), or of all its keypoints' depths when no torso keypoint has one; a keypoint further
   than max(torso_tolerance_m, torso_tolerance_rel * reference) from it landed on the wall
   behind or on a nearer person -> NaN;
4. the 3D keypoint is the depth along the ray of its own pixel, so it always projects back onto
   the published 2D keypoint.
"""
from dataclasses import dataclass

import numpy as np

from rtmo_ros.engine.skeleton import skeleton_for

TORSO_NAMES = ('left_shoulder', 'right_shoulder', 'left_hip', 'right_hip')


@dataclass(frozen=True)
class DepthConfig:
    """Depth-lifting settings; defaults suit RealSense/ZED-class cameras at 0.2-10 m."""

    patch: int = 5                    # px, odd: 25 samples survive a few holes and edges
    depth_min: float = 0.2            # m: below the minimum range of common RGB-D cameras
    depth_max: float = 10.0           # m: beyond it stereo depth error exceeds a body's depth
    keypoint_thr: float = 0.3         # keypoint score below which no depth is looked up
    torso_tolerance_m: float = 0.5    # m: half a body's depth extent, arms reaching forward
    torso_tolerance_rel: float = 0.1  # x reference depth: stereo noise grows with range
    torso: tuple = None               # shoulders and hips; None: the model's skeleton's
                                      # (COCO-17: 5, 6, 11, 12; CrowdPose-14: 0, 1, 6, 7)

    def __post_init__(self):
        if self.patch < 1 or self.patch % 2 == 0:
            raise ValueError(f'DepthConfig.patch is {self.patch}: use an odd size >= 1 (px)')
        if not 0 <= self.depth_min < self.depth_max:
            raise ValueError(f'DepthConfig depth range [{self.depth_min}, {self.depth_max}] is '
                             'empty: set 0 <= depth_min < depth_max (m)')
        if self.torso is not None and not self.torso:
            raise ValueError('DepthConfig.torso is empty: give the shoulder and hip indices, '
                             'or None for those of the skeleton')


def torso_indices(skeleton):
    """Shoulder and hip indices of a :class:`rtmo_ros.engine.skeleton.Skeleton`."""
    return tuple(skeleton.names.index(name) for name in TORSO_NAMES)


def _torso(cfg, num_keypoints):
    """The configured torso indices, else the skeleton's with that many keypoints."""
    if cfg.torso is None:
        return list(torso_indices(skeleton_for(num_keypoints)))
    if num_keypoints <= max(cfg.torso):
        raise ValueError(f'DepthConfig.torso {cfg.torso} does not fit {num_keypoints} '
                         'keypoints: leave it None to take it from the skeleton')
    return list(cfg.torso)


def depth_to_metres(array, encoding):
    """A REP 118 depth image (H, W) -> float32 metres, NaN where there is no reading.

    ``16UC1``: uint16 millimetres, 0 = invalid. ``32FC1``: float32 metres, NaN, inf and values
    <= 0 invalid.
    """
    array = np.asarray(array)
    expected = {'16UC1': np.uint16, '32FC1': np.float32}.get(encoding)
    if expected is None:
        raise ValueError(f'depth encoding {encoding!r} is not supported: REP 118 depth images '
                         'are 16UC1 (millimetres) or 32FC1 (metres)')
    if array.dtype != expected or array.ndim != 2:
        raise ValueError(f'a {encoding} depth image must be a 2D {np.dtype(expected).name} '
                         f'array, got {array.ndim}D {array.dtype}')
    if encoding == '16UC1':
        # a division (correctly rounded) so 1500 mm gives exactly float32(1.5), as 32FC1 does
        metres = array.astype(np.float32) / np.float32(1000)
        metres[array == 0] = np.nan
    else:
        metres = array.copy()
        metres[~((metres > 0) & (metres < np.inf))] = np.nan
    return metres


def nan_median(values):
    """Median over the last axis ignoring NaN; NaN when a row has none.

    np.nanmedian goes through masked arrays on short rows and is ~20x slower here.
    """
    values = np.asarray(values, np.float64)
    ordered = np.sort(values, axis=-1)            # NaN sorts last
    count = np.count_nonzero(~np.isnan(values), axis=-1)[..., None]
    lo = np.take_along_axis(ordered, np.maximum(count - 1, 0) // 2, axis=-1)
    hi = np.take_along_axis(ordered, count // 2 - (count == 0), axis=-1)
    return ((lo + hi) / 2)[..., 0]


def patch_depths(uv, depth_m, cfg):
    """Robust depth [m] (...) at pixels ``uv`` (..., 2) of ``depth_m``; NaN where unknown."""
    h, w = depth_m.shape
    flat = np.asarray(uv, np.float64).reshape(-1, 2)
    far = -cfg.patch - 1                          # NaN pixels sample outside the image
    centre = np.where(np.isfinite(flat), np.rint(flat), far).clip(far, max(h, w) + cfg.patch)
    centre = centre.astype(np.int64)
    offsets = np.arange(cfg.patch) - cfg.patch // 2
    rows = centre[:, 1, None, None] + offsets[None, :, None]   # (M, p, 1)
    cols = centre[:, 0, None, None] + offsets[None, None, :]   # (M, 1, p)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    values = depth_m[rows.clip(0, h - 1), cols.clip(0, w - 1)]
    valid = inside & (values >= cfg.depth_min) & (values <= cfg.depth_max)   # NaN: False
    values = np.where(valid, values, np.nan).reshape(len(flat), cfg.patch ** 2)
    return nan_median(values).reshape(np.shape(uv)[:-1])


def to_depth_pixels(uv, depth_shape, camera):
    """Colour-image pixels -> pixels of a registered depth image of another resolution."""
    h, w = depth_shape
    if (w, h) == (camera.width, camera.height):
        return uv
    scale = np.array([w / camera.width, h / camera.height])
    return (np.asarray(uv, np.float64) + 0.5) * scale - 0.5    # pixel centres at integers


def keypoint_depths(keypoints, keypoint_scores, depth_m, camera, cfg):
    """Depth [m] (N, K) of each keypoint after rules 1-3 of the module docstring; NaN = none."""
    torso = _torso(cfg, keypoints.shape[1])
    z = patch_depths(to_depth_pixels(keypoints, depth_m.shape, camera), depth_m, cfg)
    z[~(keypoint_scores >= cfg.keypoint_thr)] = np.nan
    reference = nan_median(z[:, torso])
    no_torso = np.isnan(reference)
    if no_torso.any():
        reference[no_torso] = nan_median(z[no_torso])
    tolerance = np.maximum(cfg.torso_tolerance_m, cfg.torso_tolerance_rel * reference)
    z[~(np.abs(z - reference[:, None]) <= tolerance[:, None])] = np.nan
    return z


def body_position(keypoints, keypoint_scores, depths, camera, cfg):
    """Body position (N, 3) [m]: the torso's median depth on the ray of its mean pixel.

    The mean pixel is over the torso keypoints scoring >= keypoint_thr (whether or not they
    have a depth), the depth over those that have one; so it is the front surface of the torso,
    not a point inside the body. NaN when the torso has no depth (we do not guess a body centre
    from a head or a hand).
    """
    torso = _torso(cfg, keypoints.shape[1])
    confident = keypoint_scores[:, torso] >= cfg.keypoint_thr
    count = confident.sum(axis=1)
    with np.errstate(invalid='ignore'):
        centre = (keypoints[:, torso] * confident[..., None]).sum(axis=1) / count[:, None]
    return camera.backproject(centre, nan_median(depths[:, torso]))


def lift(keypoints, keypoint_scores, depth_m, camera, cfg=DepthConfig()):
    """Keypoints (N, K, 2) px, scores (N, K), depth (H, W) float32 m -> 3D keypoints, position.

    Returns ``keypoints_3d`` (N, K, 3) and ``position`` (N, 3), metres in the camera optical
    frame, NaN where unknown (see the module docstring).
    """
    z = keypoint_depths(keypoints, keypoint_scores, depth_m, camera, cfg)
    return camera.backproject(keypoints, z), body_position(keypoints, keypoint_scores, z,
                                                             camera, cfg)
