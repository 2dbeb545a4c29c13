"""PersonPipeline on a synthetic RGB-D scene: two people walking at known depths and speeds."""
import cv2
import numpy as np
import pytest

from rtmo_ros.engine.poses import Poses
from rtmo_ros.perception.camera import PinholeCamera
from rtmo_ros.perception.pipeline import PerceptionConfig, PersonPipeline

W, H, FPS = 640, 480, 30.0
T0 = 1700000000.0
CAMERA = PinholeCamera.from_fields(W, H, [600.0, 0, 320, 0, 600, 240, 0, 0, 1],
                                   [0.0] * 5, [600.0, 0, 320, 0, 0, 600, 240, 0, 0, 0, 1, 0])
# a standing person, COCO-17 order, metres relative to the torso centre (y down, z away)
BODY = np.array([
    [0.0, -0.55, -0.08], [-0.03, -0.58, -0.06], [0.03, -0.58, -0.06], [-0.07, -0.56, 0.0],
    [0.07, -0.56, 0.0], [-0.18, -0.35, 0.0], [0.18, -0.35, 0.0], [-0.22, -0.08, 0.02],
    [0.22, -0.08, 0.02], [-0.24, 0.15, -0.05], [0.24, 0.15, -0.05], [-0.1, 0.15, 0.0],
    [0.1, 0.15, 0.0], [-0.1, 0.55, 0.0], [0.1, 0.55, -0.02], [-0.1, 0.95, 0.03],
    [0.1, 0.95, 0.03]])
TORSO = [5, 6, 11, 12]
# start (x, y, z) of the torso centre [m] and velocity [m/s], camera optical frame
PEOPLE = [(np.array([-0.8, 0.1, 2.0]), np.array([0.5, 0.0, 0.0])),
          (np.array([0.7, 0.15, 3.2]), np.array([-0.4, 0.0, 0.3]))]


def true_keypoints(t):
    """3D keypoints (2, 17, 3) of both people at time t [s after the start]."""
    return np.stack([BODY + start + velocity * t for start, velocity in PEOPLE])


def render(t, rng):
    """Poses (pixel noise 1 px) and a 32FC1-like depth image (1 cm noise) of the scene at t."""
    points = true_keypoints(t)
    uv = CAMERA.project(points)
    depth = np.full((H, W), 6.0, np.float32)                      # the wall behind
    for person in np.argsort(-points[:, TORSO, 2].mean(axis=1)):  # far first: near occludes
        torso = uv[person, [5, 6, 12, 11]].astype(np.int32)
        cv2.fillConvexPoly(depth, torso, float(points[person, TORSO, 2].mean()))
        for (u, v), z in zip(uv[person], points[person, :, 2]):
            cv2.circle(depth, (int(round(u)), int(round(v))), 6, float(z), -1)
    depth += rng.normal(0, 0.01, depth.shape).astype(np.float32)
    keypoints = (uv + rng.normal(0, 1.0, uv.shape)).astype(np.float32)
    boxes = np.concatenate([keypoints.min(axis=1) - 10, keypoints.max(axis=1) + 10], axis=1)
    scores = np.array([0.92, 0.88], np.float32)
    poses = Poses(boxes.astype(np.float32), scores, keypoints, np.full((2, 17), 0.9, np.float32))
    return poses, depth, points


def run_scene(pipeline, frames=30):
    rng = np.random.default_rng(7)
    for f in range(frames):
        t = f / FPS
        poses, depth, points = render(t, rng)
        yield pipeline.update(poses, T0 + t, depth, CAMERA), points, poses


def test_two_people_over_30_frames_keep_ids_and_get_3d_and_velocity_right():
    results = list(run_scene(PersonPipeline(PerceptionConfig())))
    ids = np.array([out.track_ids for out, _, _ in results])
    assert (ids == ids[0]).all() and len(set(ids[0])) == 2 and (ids[0] >= 0).all()
    for out, points, _ in results:
        # every keypoint in the image has a 3D point (person 0's ankles are below the image)
        inside = ((CAMERA.project(points) >= 0) & (CAMERA.project(points) < (W, H))).all(-1)
        assert np.array_equal(np.isfinite(out.keypoints_3d).all(-1), inside)
    settled = results[10:]                            # after the smoothing transient
    errors = np.concatenate([np.linalg.norm(out.keypoints_3d - points, axis=-1).ravel()
                             for out, points, _ in settled])
    # ~0.5 cm unsmoothed; the One-Euro lag at 0.3-0.5 m/s adds 2-3 cm
    assert np.nanmedian(errors) < 0.04 and np.nanmax(errors) < 0.08
    for out, points, _ in settled:
        # the torso front surface: x, y of the torso centre, z of its median depth
        truth = np.concatenate([points[:, TORSO, :2].mean(axis=1),
                                np.median(points[:, TORSO, 2:], axis=1)], axis=1)
        assert np.abs(out.position - truth).max() < 0.05
    last = results[-1][0]
    for person, (_, velocity) in enumerate(PEOPLE):
        assert np.abs(last.velocity[person] - velocity).max() < 0.1


def test_published_3d_keypoints_lie_on_the_rays_of_the_published_pixels():
    for out, _, _ in run_scene(PersonPipeline(), frames=8):
        rays = CAMERA.rays(out.keypoints.astype(np.float64))
        cross = np.cross(out.keypoints_3d, rays)
        assert np.nanmax(np.abs(cross)) < 1e-5       # float32 pixels, float64 rays


def test_smoothing_reduces_the_3d_jitter():
    def jitter(cfg):
        outs = [out.keypoints_3d for out, _, _ in run_scene(PersonPipeline(cfg))]
        return np.nanmean(np.abs(np.diff(np.array(outs)[10:], n=2, axis=0)))
    assert jitter(PerceptionConfig()) < 0.5 * jitter(PerceptionConfig(smoothing=False))


def test_tracking_off_gives_raw_keypoints_and_no_ids_or_velocity():
    cfg = PerceptionConfig(tracking=False)
    for out, _, poses in run_scene(PersonPipeline(cfg), frames=5):
        assert (out.track_ids == -1).all()
        assert np.array_equal(out.keypoints, poses.keypoints)
        assert np.isnan(out.velocity).all() and np.isfinite(out.position).all()


def test_without_depth_the_3d_outputs_are_nan():
    pipeline = PersonPipeline()
    rng = np.random.default_rng(0)
    for f in range(3):
        poses, _, _ = render(f / FPS, rng)
        out = pipeline.update(poses, T0 + f / FPS)
        assert out.keypoints_3d.shape == (2, 17, 3) and np.isnan(out.keypoints_3d).all()
        assert np.isnan(out.position).all() and np.isnan(out.velocity).all()
        assert out.keypoints.dtype == np.float32 and (out.track_ids >= 0).all()


def test_stamps_going_backwards_flag_one_reset_and_ids_move_on():
    pipeline = PersonPipeline()
    rng = np.random.default_rng(0)
    poses, depth, _ = render(0.0, rng)
    first = pipeline.update(poses, T0 + 5.0, depth, CAMERA)
    looped = pipeline.update(poses, T0, depth, CAMERA)
    after = pipeline.update(poses, T0 + 1 / FPS, depth, CAMERA)
    assert not first.reset and looped.reset and not after.reset and pipeline.resets == 1
    assert set(looped.track_ids).isdisjoint(first.track_ids)
    assert np.array_equal(looped.keypoints, poses.keypoints)      # smoothing starts again


def test_nobody_gives_empty_arrays():
    out = PersonPipeline().update(Poses.empty(17), T0, np.full((H, W), 2.0, np.float32), CAMERA)
    assert len(out) == 0 and out.keypoints.shape == (0, 17, 2)
    assert out.keypoints_3d.shape == (0, 17, 3) and out.velocity.shape == (0, 3)


def test_depth_without_a_camera_is_refused():
    poses, depth, _ = render(0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match='camera'):
        PersonPipeline().update(poses, T0, depth)
