"""Tracking (MOTA, IDF1, ID switches, HOTA) and 3D keypoint metrics against hand-computed cases."""
import subprocess
import sys

import numpy as np
import pytest

from rtmo_ros import track_metrics
from rtmo_ros.track_metrics import hota, keypoint3d_metrics, match_boxes, tracking_metrics

A, B = (0, 0, 10, 10), (20, 0, 30, 10)  # two people who never overlap
TALL = (0, 0, 10, 20)                    # IoU(A, TALL) = 100 / 200 = 0.5 exactly


def test_perfect_tracker_scores_one():
    gt = [[(1, A), (2, B)] for _ in range(6)]
    pred = [[(7, A), (9, B)] for _ in range(6)]  # other ids, same people: still perfect
    m = tracking_metrics(gt, pred)
    assert (m['hota'], m['deta'], m['assa'], m['idf1'], m['mota']) == (1, 1, 1, 1, 1)
    assert (m['id_switches'], m['false_positives'], m['misses']) == (0, 0, 0)
    assert (m['gt_tracks'], m['gt_boxes'], m['pred_boxes'], m['frames']) == (2, 12, 12, 6)
    assert m['motp_iou'] == 1.0


def test_one_id_switch_in_the_middle():
    """GT 1 is followed by id 10 in frames 0-2, by a new id 30 in frames 3-5; GT 2 by 20.

    By hand, 12 GT boxes, every one matched (IoU 1):
    - MOTA = 1 - (FN + FP + IDSW) / GT = 1 - (0 + 0 + 1) / 12 = 11 / 12.
    - IDF1: the best one-to-one id pairing is 1-10 (or 1-30) and 2-20, so IDTP = 3 + 6 = 9,
      IDFN = 12 - 9 = 3, IDFP = 12 - 9 = 3; IDF1 = 2 * 9 / (2 * 9 + 3 + 3) = 0.75.
    - HOTA: DetA = 1 at every alpha. AssA averages over the 12 TPs the Jaccard of their id
      pair: 2-20 has TPA 6, FNA 0, FPA 0 -> 1 (6 TPs); 1-10 has TPA 3, FNA 3, FPA 0 -> 0.5
      (3 TPs); 1-30 likewise 0.5 (3 TPs). AssA = (6 + 1.5 + 1.5) / 12 = 0.75 and
      HOTA = sqrt(1 * 0.75).
    """
    gt = [[(1, A), (2, B)] for _ in range(6)]
    pred = [[(10 if f < 3 else 30, A), (20, B)] for f in range(6)]
    m = tracking_metrics(gt, pred)
    assert m['id_switches'] == 1 and (m['false_positives'], m['misses']) == (0, 0)
    assert m['mota'] == pytest.approx(11 / 12)
    assert m['idf1'] == pytest.approx(0.75) and m['idp'] == m['idr'] == pytest.approx(0.75)
    assert m['deta'] == pytest.approx(1.0) and m['assa'] == pytest.approx(0.75)
    assert m['hota'] == pytest.approx(np.sqrt(0.75))


def test_swapped_ids_misses_false_positives_and_untracked():
    """Ids swapped after frame 2: two switches; an untracked (-1) box is ignored.

    Frame 0 misses GT 2 and has a box on nobody (a FP). By hand: GT 12, FN 1, FP 1,
    IDSW 2 -> MOTA = 1 - 4 / 12. IDF1: co-occurrences 1-10: 3 frames, 1-20: 3, 2-20: 2
    (frame 0 missed), 2-10: 3. The best one-to-one pairing is 1-20 and 2-10: IDTP 6,
    IDFN = 12 - 6, IDFP = 12 - 6 (12 tracked boxes) -> IDF1 = 2 * 6 / (12 + 6 + 6) = 0.5.
    """
    gt = [[(1, A), (2, B)] for _ in range(6)]
    pred = [[(10, A), (20, B)] if f < 3 else [(20, A), (10, B)] for f in range(6)]
    pred[0] = [(10, A), (40, (50, 50, 60, 60)), (-1, B)]
    m = tracking_metrics(gt, pred)
    assert (m['id_switches'], m['misses'], m['false_positives']) == (2, 1, 1)
    assert m['mota'] == pytest.approx(8 / 12)
    assert m['idf1'] == pytest.approx(0.5)
    assert m['pred_boxes'] == 12  # the -1 box is not counted


def test_hota_against_the_formula_with_partial_overlap():
    """One track, two frames; IoU 1 in frame 0, exactly 0.5 in frame 1.

    For the 10 alphas 0.05..0.50 both frames match: DetA = 1, AssA = 2 / (2 + 2 - 2) = 1.
    For the 9 alphas 0.55..0.95 frame 1 is a FN and a FP: DetA = 1 / (1 + 1 + 1) = 1/3,
    AssA = 1 / (2 + 2 - 1) = 1/3, HOTA_alpha = 1/3. HOTA = (10 * 1 + 9 / 3) / 19 = 13 / 19.
    """
    m = tracking_metrics([[(1, A)], [(1, A)]], [[(5, A)], [(5, TALL)]])
    assert m['hota'] == pytest.approx(13 / 19)
    assert m['deta'] == pytest.approx(13 / 19) and m['assa'] == pytest.approx(13 / 19)
    assert m['mota'] == 1.0 and m['motp_iou'] == pytest.approx(0.75)  # IoU 0.5 still matches
    direct = hota([[1], [1]], [[5], [5]], [np.ones((1, 1)), np.full((1, 1), 0.5)])
    assert len(direct['hota_alpha']) == 19
    np.testing.assert_allclose(direct['hota_alpha'], [1.0] * 10 + [1 / 3] * 9)


def test_hota_of_nothing_and_of_false_positives_only():
    assert hota([[], []], [[], []], [np.zeros((0, 0))] * 2)['hota'] == 0.0
    m = tracking_metrics([[], []], [[(1, A)], []])
    assert m['hota'] == 0.0 and m['false_positives'] == 1 and np.isnan(m['mota'])


def test_inputs_are_checked():
    with pytest.raises(ValueError, match='2 frames and pred_frames 1'):
        tracking_metrics([[], []], [[]])
    with pytest.raises(ValueError, match=r'pred_frames\[0\] repeats a track id'):
        tracking_metrics([[]], [[(3, A), (3, B)]])
    tracking_metrics([[]], [[(-1, A), (-1, B)]])  # several untracked boxes are fine


def test_matching_is_hungarian_not_greedy():
    """Greedy would pair g2-p1 (IoU 0.82) and leave g1-p2 (0.33) unmatched; the optimal
    assignment pairs g1-p1 (0.67) and g2-p2 (0.67)."""
    gt = [(0, 0, 10, 10), (3, 0, 13, 10)]
    pred = [(2, 0, 12, 10), (5, 0, 15, 10)]
    rows, cols, iou = match_boxes(gt, pred)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]
    np.testing.assert_allclose(iou, [80 / 120, 80 / 120])
    assert len(match_boxes(gt, [])[0]) == 0


def person(box, points, visibility, position=None):
    """A record with 17 keypoints: ``points`` {joint: (x, y, z)}, the others zeros / NaN."""
    kpts = np.zeros((17, 3))
    vis = np.zeros(17)
    for joint, xyz in points.items():
        kpts[joint] = xyz
        vis[joint] = visibility.get(joint, 2)
    out = {'box': box, 'keypoints_3d': kpts, 'visibility': vis}
    if position is not None:
        out['position_3d'] = np.asarray(position, float)
    return out


def test_keypoint3d_metrics_by_hand():
    """Frame 0: GT a has joints 0, 1 (v 1: occluded still counts), 2 labelled; the prediction
    is 0.1 and 0.3 m off on 0 and 1, NaN on 2 (not valid). Joint 3 (v 0) is ignored.
    Frame 1: GT a again (errors 0.5, 0, 0.2) and GT b (2 joints) whose only prediction is
    elsewhere (IoU 0): not valid. Counted 3 + 3 + 2 = 8, valid 5, errors
    [0, 0.1, 0.2, 0.3, 0.5]: median 0.2, p90 = 0.3 + 0.6 * (0.5 - 0.3) = 0.42, mean 0.22.
    Positions: frame 0 given, 0.2 m off; frame 1 from the torso joints (5, 6, 11, 12)
    of the prediction, 0.4 m off; b unmatched: median 0.3 over 2 of 3 GT persons.
    """
    gt_a = person(A, {0: (0, 0, 2), 1: (1, 0, 2), 2: (0, 1, 2), 3: (5, 5, 5)}, {1: 1, 3: 0},
                  position=(0.5, 0.5, 2))
    gt_b = person(B, {0: (3, 0, 4), 1: (3, 1, 4)}, {}, position=(3, 0.5, 4))
    nan = (np.nan, np.nan, np.nan)
    pred_0 = person(A, {0: (0, 0, 2.1), 1: (1, 0, 2.3), 2: nan, 3: (9, 9, 9)}, {},
                    position=(0.5, 0.5, 2.2))
    torso = {5: (0.5, 0.5, 2.4), 6: (0.5, 0.5, 2.4), 11: (0.5, 0.5, 2.4), 12: nan}
    pred_1 = person((0, 0, 10, 11), {0: (0, 0, 2.5), 1: (1, 0, 2), 2: (0, 1.2, 2), **torso}, {})
    elsewhere = person((50, 0, 60, 10), {0: (3, 0, 4)}, {}, position=(3, 0.5, 4))
    m = keypoint3d_metrics([[gt_a], [gt_a, gt_b]], [[pred_0], [pred_1, elsewhere]])
    assert (m['gt_keypoints'], m['valid_keypoints']) == (8, 5)
    assert (m['gt_persons'], m['matched_persons']) == (3, 2)
    assert m['kpt3d_valid_fraction'] == pytest.approx(5 / 8)
    assert m['kpt3d_err_median_m'] == pytest.approx(0.2)
    assert m['kpt3d_err_p90_m'] == pytest.approx(0.42)
    assert m['kpt3d_err_mean_m'] == pytest.approx(0.22)
    assert m['position_err_median_m'] == pytest.approx(0.3)
    assert m['position_valid_fraction'] == pytest.approx(2 / 3)


def test_keypoint3d_metrics_without_matches():
    gt = person(A, {0: (0, 0, 2)}, {}, position=(0, 0, 2))
    m = keypoint3d_metrics([[gt]], [[]])
    assert m['kpt3d_valid_fraction'] == 0.0 and np.isnan(m['kpt3d_err_median_m'])
    assert np.isnan(m['position_err_median_m']) and m['position_valid_fraction'] == 0.0


def test_gt_frames_from_coco():
    gt = {'images': [{'id': 7}, {'id': 3}],
          'annotations': [{'image_id': 3, 'bbox': [1, 2, 10, 20], 'track_id': 4,
                           'keypoints': [1, 2, 2] * 17, 'keypoints_3d': [0.5, 0.25, 2] * 17,
                           'position_3d': [0.5, 0.25, 2]}]}
    frames = track_metrics.gt_frames_from_coco(gt)
    assert frames[0] == [] and len(frames[1]) == 1
    record = frames[1][0]
    assert record['box'] == (1, 2, 11, 22) and record['keypoints_3d'].shape == (17, 3)
    assert track_metrics.track_boxes(frames) == [[], [(4, (1, 2, 11, 22))]]


def test_module_needs_no_ros():
    code = ('import sys, rtmo_ros.track_metrics; '
            'print(sorted(m for m in ("rclpy", "torch", "motmetrics") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == '[]'  # motmetrics (and pandas) load on the first tracking_metrics


def random_sequence(seed, frames=40, people=4):
    """Moving boxes; predictions jittered, some missed, ids swapped now and then, clutter."""
    rng = np.random.default_rng(seed)
    start, vel = rng.uniform(0, 200, (people, 2)), rng.normal(0, 3, (people, 2))
    size = rng.uniform(20, 60, (people, 2))
    ids = list(range(100, 100 + people))
    gt, pred = [], []
    for t in range(frames):
        if rng.random() < 0.1:
            a, b = rng.choice(people, 2, replace=False)
            ids[a], ids[b] = ids[b], ids[a]
        g, p = [], []
        for i in range(people):
            if rng.random() < 0.1:
                continue
            box = np.r_[start[i] + vel[i] * t, start[i] + vel[i] * t + size[i]]
            g.append((i, box))
            if rng.random() > 0.15:
                p.append((ids[i], box + rng.normal(0, 4, 4)))
        if rng.random() < 0.3:
            corner = rng.uniform(0, 200, 2)
            p.append((500 + t, np.r_[corner, corner + 40]))
        gt.append(g)
        pred.append(p)
    return gt, pred


def test_same_hota_idf1_and_counts_as_trackeval():
    """TrackEval (optional, not a requirement) as the reference on random sequences.

    HOTA / DetA / AssA and IDF1 agree to float precision, and so do the CLEAR MOT matches
    (misses, false positives). ID switches may differ: TrackEval continues only tracks
    matched in the previous frame, motmetrics the last match of a track even across a gap.
    """
    metrics = pytest.importorskip('trackeval.metrics')
    for seed in range(10):
        gt, pred = random_sequence(seed)
        ours = tracking_metrics(gt, pred)
        dense_gt, n_gt = track_metrics._dense([np.array([i for i, _ in f]) for f in gt])
        dense_pred, n_pred = track_metrics._dense([np.array([i for i, _ in f]) for f in pred])
        data = {'num_gt_dets': sum(map(len, gt)), 'num_tracker_dets': sum(map(len, pred)),
                'num_gt_ids': n_gt, 'num_tracker_ids': n_pred, 'gt_ids': dense_gt,
                'tracker_ids': dense_pred, 'num_timesteps': len(gt),
                'similarity_scores': [track_metrics.box_iou([b for _, b in g], [b for _, b in p])
                                      for g, p in zip(gt, pred)]}
        ref = metrics.HOTA().eval_sequence(data)
        clear = metrics.CLEAR({'PRINT_CONFIG': False}).eval_sequence(data)
        identity = metrics.Identity({'PRINT_CONFIG': False}).eval_sequence(data)
        assert ours['hota'] == pytest.approx(ref['HOTA'].mean(), abs=1e-12)
        assert ours['deta'] == pytest.approx(ref['DetA'].mean(), abs=1e-12)
        assert ours['assa'] == pytest.approx(ref['AssA'].mean(), abs=1e-12)
        assert ours['idf1'] == pytest.approx(identity['IDF1'], abs=1e-12)
        assert (ours['misses'], ours['false_positives']) == (clear['CLR_FN'], clear['CLR_FP'])
