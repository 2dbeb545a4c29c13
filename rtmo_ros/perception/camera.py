"""Pinhole camera from ``sensor_msgs/CameraInfo`` fields: pixels <-> rays and 3D points.

Frame: the camera optical frame of the image (REP 103: x right, y down, z forward), metres.

Which matrix applies depends on the image the keypoints come from (CameraInfo's own rules):

- a raw image (``image_raw``, ``rectified=False``) is distorted: pixels are undistorted with K
  and D (``plumb_bob`` / ``rational_polynomial`` through ``cv2.undistortPoints``,
  ``equidistant`` through ``cv2.fisheye``) before they become rays;
- a rectified image (``image_rect``, ``rectified=True``) has no distortion and its intrinsics
  are P's left 3x3 (fx' = P[0], fy' = P[5], cx' = P[2], cy' = P[6]), which may differ from K.
  P's fourth column (a stereo baseline) is ignored: points stay in this camera's own frame.
"""
import cv2
import numpy as np

# cv2.undistortPoints stops after 5 iterations by default: 0.04-0.13 mm of error at 2.5 m near
# the corners of the lenses in test_perception_depth.py, more for stronger ones; these criteria
# converge to ~1e-13 m there
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
_OPENCV_MODELS = ('plumb_bob', 'rational_polynomial')
_FISHEYE_MODELS = ('equidistant',)


def _undistort_points(pts, k, d):
    """cv2.undistortPoints with our iteration criteria (OpenCV 4 names that overload
    ``undistortPointsIter``; OpenCV 5 takes the criteria in ``undistortPoints`` itself)."""
    if hasattr(cv2, 'undistortPointsIter'):
        return cv2.undistortPointsIter(pts, k, d, None, None, _UNDISTORT_CRITERIA)
    return cv2.undistortPoints(pts, k, d, R=None, P=None, criteria=_UNDISTORT_CRITERIA)


class PinholeCamera:
    """Intrinsics of one image stream; build with :meth:`from_fields` or :meth:`from_msg`."""

    def __init__(self, width, height, k, d, p, distortion_model, rectified):
        self.width, self.height = int(width), int(height)
        self.k = np.asarray(k, np.float64).reshape(3, 3)
        self.d = np.asarray(d, np.float64).ravel()
        self.p = np.asarray(p, np.float64).reshape(3, 4)
        self.distortion_model = distortion_model
        self.rectified = bool(rectified)
        self._intrinsics = self.p[:, :3] if self.rectified else self.k
        self._undistort = not self.rectified and bool(np.any(self.d != 0))

    @classmethod
    def from_fields(cls, width, height, k, d, p, distortion_model='plumb_bob', rectified=False):
        """Validate CameraInfo-like fields and build the camera; ValueError names a bad field."""
        k, d, p = (np.asarray(v, np.float64).ravel() for v in (k, d, p))
        _check_fields(width, height, k, d, p, distortion_model, rectified)
        return cls(width, height, k, d, p, distortion_model, rectified)

    @classmethod
    def from_msg(cls, msg, rectified=False):
        """Read a CameraInfo (ROS 2 lowercase ``k``/``d``/``p``, or ROS 1 ``K``/``D``/``P``)."""
        k, d, p, model = _calibration(msg)
        return cls.from_fields(msg.width, msg.height, k, d, p, model, rectified)

    @property
    def fx(self):
        return float(self._intrinsics[0, 0])

    @property
    def fy(self):
        return float(self._intrinsics[1, 1])

    @property
    def cx(self):
        return float(self._intrinsics[0, 2])

    @property
    def cy(self):
        return float(self._intrinsics[1, 2])

    def rays(self, uv):
        """Pixels (..., 2) -> rays (..., 3) on the normalised plane z = 1: (x, y, 1).

        NaN pixels give NaN rays.
        """
        uv = np.asarray(uv, np.float64)
        flat = uv.reshape(-1, 2)
        xy = np.full_like(flat, np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if ok.any():
            xy[ok] = self._normalise(flat[ok])
        z = np.where(ok, 1.0, np.nan)[:, None]
        return np.concatenate([xy, z], axis=1).reshape(uv.shape[:-1] + (3,))

    def backproject(self, uv, z):
        """Pixels (..., 2) and depths z (...) along the optical axis [m] -> points (..., 3) [m].

        ``z`` is the z coordinate (what REP 118 depth images hold), not the range, so the point
        is ``ray * z`` and lies exactly on the ray of its pixel.
        """
        return self.rays(uv) * np.asarray(z, np.float64)[..., None]

    def project(self, xyz):
        """Points (..., 3) [m] -> pixels (..., 2) of this image (distorted when raw).

        Points with z <= 0 (behind the camera) or NaN give NaN.
        """
        xyz = np.asarray(xyz, np.float64)
        flat = xyz.reshape(-1, 3)
        uv = np.full((len(flat), 2), np.nan)
        ok = np.isfinite(flat).all(axis=1) & (flat[:, 2] > 0)
        if ok.any():
            uv[ok] = self._project(flat[ok])
        return uv.reshape(xyz.shape[:-1] + (2,))

    def _normalise(self, uv):
        if not self._undistort:
            return (uv - (self.cx, self.cy)) / (self.fx, self.fy)
        pts = uv.reshape(-1, 1, 2)
        if self.distortion_model in _FISHEYE_MODELS:
            out = cv2.fisheye.undistortPoints(pts, self.k, self.d, criteria=_UNDISTORT_CRITERIA)
        else:
            out = _undistort_points(pts, self.k, self.d)
        return out.reshape(-1, 2)

    def _project(self, xyz):
        if not self._undistort:
            xy = xyz[:, :2] / xyz[:, 2:]
            return xy * (self.fx, self.fy) + (self.cx, self.cy)
        pts, zero = xyz.reshape(-1, 1, 3), np.zeros(3)
        if self.distortion_model in _FISHEYE_MODELS:
            out, _ = cv2.fisheye.projectPoints(pts, zero, zero, self.k, self.d)
        else:
            out, _ = cv2.projectPoints(pts, zero, zero, self.k, self.d)
        return out.reshape(-1, 2)


def _check_fields(width, height, k, d, p, distortion_model, rectified):
    """Raise ValueError with one sentence naming the field and the fix."""
    if not (width > 0 and height > 0):
        raise ValueError(f'CameraInfo width/height is {width}x{height}: the camera driver '
                         'publishes no calibration; set width and height from the image')
    for name, values, size in (('k', k, 9), ('p', p, 12)):
        if values.size != size:
            raise ValueError(f'CameraInfo {name} has {values.size} values, expected {size}: '
                             'pass the row-major matrix from the calibration file')
    for name, values in (('k', k), ('d', d), ('p', p)):
        if not np.isfinite(values).all():
            raise ValueError(f'CameraInfo {name} contains NaN or inf: recalibrate the camera '
                             '(camera_calibration) or fix the calibration file')
    matrix_name, matrix = ('p', p.reshape(3, 4)) if rectified else ('k', k.reshape(3, 3))
    if not np.any(matrix):
        raise ValueError(f'CameraInfo {matrix_name} is all zero: the camera is not calibrated; '
                         'calibrate it (camera_calibration) or load a calibration file')
    if not (matrix[0, 0] > 0 and matrix[1, 1] > 0):
        raise ValueError(f'CameraInfo {matrix_name} has fx = {matrix[0, 0]}, fy = '
                         f'{matrix[1, 1]}: focal lengths must be positive; fix the calibration')
    if not rectified and np.any(d != 0):
        _check_distortion(d, distortion_model)


def _check_distortion(d, distortion_model):
    if distortion_model in _FISHEYE_MODELS:
        if d.size != 4:
            raise ValueError(f'CameraInfo d has {d.size} values for the equidistant model, '
                             'expected 4 (k1..k4): fix the calibration file')
    elif distortion_model in _OPENCV_MODELS:
        if d.size not in (4, 5, 8, 12, 14):
            raise ValueError(f'CameraInfo d has {d.size} values for {distortion_model}, '
                             'expected 5 (plumb_bob) or 8 (rational_polynomial)')
    else:
        raise ValueError(f'CameraInfo distortion_model {distortion_model!r} is not supported: '
                         'use plumb_bob, rational_polynomial or equidistant, or subscribe to '
                         'the rectified image with rectified=True')


class CameraInfos:
    """The newest CameraInfo of each (frame_id, width, height), as cameras for their images.

    An image uses the camera_info of its own frame and size (the node and the bag tools alike).
    Cameras publish the same calibration with every frame: the PinholeCamera is built (and
    validated) again only when K, D, P or the distortion model change.
    """

    def __init__(self, rectified=False):
        self.rectified = rectified
        self._latest = {}  # (frame_id, width, height) -> (CameraInfo, PinholeCamera or None)

    def add(self, msg):
        key = (msg.header.frame_id, int(msg.width), int(msg.height))
        old = self._latest.get(key)
        if old is None or _calibration(old[0]) != _calibration(msg):
            self._latest[key] = (msg, None)

    def camera_for(self, frame_id, width, height):
        """The image's PinholeCamera, or None without a camera_info; ValueError when refused."""
        key = (frame_id, int(width), int(height))
        entry = self._latest.get(key)
        if entry is None:
            return None
        msg, camera = entry
        if camera is None:
            camera = PinholeCamera.from_msg(msg, rectified=self.rectified)
            self._latest[key] = (msg, camera)
        return camera


def _calibration(msg):
    """(K, D, P, distortion model) of a CameraInfo, ROS 2 (``k``) or ROS 1 (``K``) names."""
    def field(name):
        return getattr(msg, name) if hasattr(msg, name) else getattr(msg, name.upper())
    return (tuple(field('k')), tuple(field('d')), tuple(field('p')), msg.distortion_model)
