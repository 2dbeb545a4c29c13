"""One-Euro keypoint smoothing: still points stay put, jitter drops, time comes from stamps."""
import math

import numpy as np
import pytest

from rtmo_ros.perception.one_euro import KeypointSmoother, smoothing_factor

K = 17
T0 = 1700000000.0


def still(n=2, value=100.0):
    return np.full((n, K, 2), value)


def feed(smoother, frames, ids=(0, 1), depths=None, step=1 / 30):
    """Smoothed keypoints (and depths) for a list of keypoint frames at ``step`` spacing."""
    out_xy, out_z = [], []
    for f, kp in enumerate(frames):
        z = None if depths is None else depths[f]
        xy, sz = smoother.update(np.array(ids), kp, z, T0 + f * step)
        out_xy.append(xy)
        out_z.append(sz)
    return np.array(out_xy), out_z


def test_constant_signal_stays_exactly_constant():
    xy, _ = feed(KeypointSmoother(), [still() for _ in range(30)])
    assert np.array_equal(xy, np.stack([still()] * 30))


def test_step_converges_without_overshoot():
    frames = [still(value=100.0 if f < 10 else 200.0) for f in range(70)]
    xy, _ = feed(KeypointSmoother(), frames)
    after = xy[10:, 0, 0, 0]
    assert 100 < after[0] < 200 and np.all(np.diff(after) >= 0) and after.max() <= 200
    assert abs(after[30] - 200) < 1.0                  # within 1 px a second later


def test_jitter_of_a_still_keypoint_drops_more_than_5x_at_the_defaults():
    rng = np.random.default_rng(3)
    frames = [still() + rng.normal(0, 2.0, (2, K, 2)) for _ in range(300)]   # 2 px, 30 Hz
    xy, _ = feed(KeypointSmoother(), frames)
    raw_var = np.var(np.array(frames)[30:], axis=0).mean()
    smooth_var = np.var(xy[30:], axis=0).mean()
    assert raw_var / smooth_var > 5


def test_depth_jitter_drops_more_than_5x_at_the_defaults():
    rng = np.random.default_rng(4)
    depths = [2.0 + rng.normal(0, 0.015, (2, K)) for _ in range(300)]        # 1.5 cm
    _, z = feed(KeypointSmoother(), [still()] * 300, depths=depths)
    assert np.var(np.array(depths)[30:], axis=0).mean() / np.var(z[30:], axis=0).mean() > 5


def test_dt_comes_from_the_stamps_as_the_formula_says():
    def second_output(step):
        xy, _ = feed(KeypointSmoother(min_cutoff=1.0, beta=0.02, d_cutoff=1.0),
                     [still(1, 0.0), still(1, 10.0)], ids=(0,), step=step)
        return xy[1, 0, 0, 0]

    def formula(step):
        dt = (T0 + step) - T0                           # what the stamps really say
        edx = smoothing_factor(1.0, dt) * (10.0 / dt)   # speed filter starts at 0
        return smoothing_factor(1.0 + 0.02 * abs(edx), dt) * 10.0

    assert second_output(1 / 30) == pytest.approx(formula(1 / 30), rel=1e-12)
    assert second_output(2 / 30) == pytest.approx(formula(2 / 30), rel=1e-12)
    assert second_output(2 / 30) > second_output(1 / 30) + 0.5   # longer step, less smoothing


def test_smoothing_factor_is_a_first_order_low_pass():
    # alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi fc)
    assert smoothing_factor(1.0, 0.1) == pytest.approx(1 / (1 + 1 / (2 * math.pi * 0.1)))


def test_first_sample_passes_through():
    frame = np.random.default_rng(0).uniform(0, 640, (2, K, 2))
    xy, _ = feed(KeypointSmoother(), [frame])
    assert np.array_equal(xy[0], frame)


def test_nan_passes_through_and_does_not_touch_the_state():
    rng = np.random.default_rng(1)
    frames = [still() + rng.normal(0, 3, (2, K, 2)) for _ in range(6)]
    with_nan = [f.copy() for f in frames]
    with_nan[3][0, 5] = np.nan
    smoother = KeypointSmoother()
    got = [smoother.update(np.array([0, 1]), f, None, T0 + i / 30)[0]
           for i, f in enumerate(with_nan)]
    assert np.isnan(got[3][0, 5]).all() and np.isfinite(got[3][1]).all()
    # keypoint 5 of person 0 continues as if frame 3 never happened (stamps say 2 frames)
    skipping = KeypointSmoother()
    ref = [skipping.update(np.array([0]), frames[i][:1], None, T0 + i / 30)[0]
           for i in (0, 1, 2, 4, 5)]
    assert np.array_equal(got[5][0, 5], ref[-1][0, 5])


def test_nan_depth_leaves_the_depth_state_untouched():
    depths = [np.full((1, K), d) for d in (2.0, 2.1, np.nan, 2.2)]
    _, z = feed(KeypointSmoother(), [still(1)] * 4, ids=(0,), depths=depths)
    assert np.isnan(z[2]).all()
    # the same as never having had the NaN frame: a 2/30 s step from the second sample
    smoother = KeypointSmoother()
    for i, d in ((0, 2.0), (1, 2.1), (3, 2.2)):
        _, last = smoother.update(np.array([0]), still(1), np.full((1, K), d), T0 + i / 30)
    assert np.array_equal(z[3], last)


def test_untracked_people_pass_through_unfiltered():
    rng = np.random.default_rng(2)
    smoother = KeypointSmoother()
    for f in range(10):
        kp = rng.uniform(0, 640, (2, K, 2))
        xy, _ = smoother.update(np.array([-1, -1]), kp, None, T0 + f / 30)
        assert np.array_equal(xy, kp)


def test_forgotten_and_reset_tracks_start_again_from_the_raw_sample():
    smoother = KeypointSmoother(forget_s=1.0)
    smoother.update(np.array([0]), still(1, 100.0), None, T0)
    smoother.update(np.array([1]), still(1, 50.0), None, T0 + 1.5)      # id 0 unseen 1.5 s
    xy, _ = smoother.update(np.array([0]), still(1, 300.0), None, T0 + 1.6)
    assert np.array_equal(xy, still(1, 300.0))
    xy, _ = smoother.update(np.array([1]), still(1, 80.0), None, T0 + 0.5)   # stamps back
    assert np.array_equal(xy, still(1, 80.0))


def test_duplicate_track_ids_are_refused():
    with pytest.raises(ValueError, match='unique'):
        KeypointSmoother().update(np.array([3, 3]), still(), None, T0)


def test_speeds_in_body_heights_smooth_a_person_alike_at_any_size():
    """The same walk seen twice as large (twice the pixels, twice the box height) is smoothed
    by the same fraction of the person's height, so one beta suits near and far people."""
    rng = np.random.default_rng(3)
    t = np.arange(60) / 30.0
    walk = 100 + 120 * t[:, None, None, None] + rng.normal(0, 2, (60, 1, 17, 2))
    outputs = []
    for factor in (1.0, 2.0):
        smoother = KeypointSmoother(1.0, 10.0, 1.0)
        out = [smoother.update(np.array([0]), factor * walk[i], None, t[i],
                               scales=[factor * 150.0])[0] for i in range(60)]
        outputs.append(np.array(out) / factor)
    assert np.allclose(outputs[0], outputs[1], atol=1e-6)
    unscaled = KeypointSmoother(1.0, 10.0 / 150.0, 1.0)
    plain = [unscaled.update(np.array([0]), walk[i], None, t[i])[0] for i in range(60)]
    assert np.allclose(outputs[0], np.array(plain), atol=1e-6)  # beta / h == beta in 1/px
