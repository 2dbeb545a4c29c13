"""SimOTA assigner (rtmo_train.assigner) on hand-made cases with known answers."""
import math

import pytest
import torch

from rtmo_train.assigner import EPS, INF, SimOTAAssigner, pose_oks

SIGMAS = torch.tensor([0.1, 0.1])  # K = 2
FAR = torch.tensor([[1000.0, 1000.0], [1000.0, 1000.0]])  # keypoints with OKS == 0


def grid_priors(size=64, stride=8):
    """(P, 4) priors (x, y, s, s), row-major, at s*j + (s-1)/2 as RTMO's generator."""
    c = torch.arange(size // stride, dtype=torch.float32) * stride + (stride - 1) / 2
    yy, xx = torch.meshgrid(c, c, indexing='ij')
    s = torch.full_like(xx, float(stride))
    return torch.stack([xx, yy, s, s], dim=-1).reshape(-1, 4)


def index_of(priors, x, y):
    hit = torch.nonzero((priors[:, 0] == x) & (priors[:, 1] == y))
    assert hit.numel() == 1, (x, y)
    return int(hit[0, 0])


def gt(boxes, kpts, vis=None, areas=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    kpts = torch.tensor(kpts, dtype=torch.float32).reshape(-1, 2, 2)
    vis = torch.ones(kpts.shape[:2]) if vis is None else torch.tensor(vis, dtype=torch.float32)
    areas = torch.full((boxes.shape[0],), 400.0) if areas is None else torch.tensor(areas)
    return boxes, kpts, vis, areas


def test_candidates_inside_box_or_centre_square():
    priors = grid_priors()
    # box (10, 10)-(30, 50); centre (20, 30); centre square +-2.5*8 -> (0, 10)-(40, 50)
    boxes, kpts, vis, _ = gt([10, 10, 30, 50], [[12, 14], [14, 14]])
    valid, both = SimOTAAssigner(SIGMAS).candidates(priors, boxes, kpts, vis)
    xs = priors[valid, 0].unique().tolist()
    ys = priors[valid, 1].unique().tolist()
    assert xs == [3.5, 11.5, 19.5, 27.5, 35.5]   # strictly inside 0 < x < 40
    assert ys == [11.5, 19.5, 27.5, 35.5, 43.5]  # strictly inside 10 < y < 50
    assert int(valid.sum()) == 25
    # inside both: x strictly inside (10, 30), y strictly inside (10, 50)
    both_xy = priors[valid][both[:, 0]]
    assert sorted(both_xy[:, 0].unique().tolist()) == [11.5, 19.5, 27.5]
    assert int(both.sum()) == 15


def test_keypoint_centre_moves_the_centre_square():
    priors = grid_priors()
    # visible keypoints at (12, 14) and (14, 14): centre (13, 14) -> square (-7, -6)-(33, 34)
    boxes, kpts, vis, _ = gt([10, 10, 30, 50], [[12, 14], [14, 14]])
    on = SimOTAAssigner(SIGMAS, use_keypoints_for_center=True)
    off = SimOTAAssigner(SIGMAS, use_keypoints_for_center=False)
    valid_on, _ = on.candidates(priors, boxes, kpts, vis)
    valid_off, _ = off.candidates(priors, boxes, kpts, vis)
    corner = index_of(priors, 3.5, 3.5)      # only in the keypoint-centred square
    low = index_of(priors, 35.5, 43.5)       # only in the box-centred square
    assert bool(valid_on[corner]) and not bool(valid_off[corner])
    assert bool(valid_off[low]) and not bool(valid_on[low])
    # an invisible keypoint does not count; no visible keypoint -> back to the box centre
    _, kpts2, _, _ = gt([10, 10, 30, 50], [[12, 14], [60, 60]])
    valid_one, _ = on.candidates(priors, boxes, kpts2, torch.tensor([[1.0, 0.0]]))
    assert torch.equal(valid_one, valid_on)
    valid_none, _ = on.candidates(priors, boxes, kpts, torch.zeros(1, 2))
    assert torch.equal(valid_none, valid_off)


def assign_one(assigner, priors, pred_kpts, scores, boxes, kpts, vis, areas, pred_boxes=None):
    pred_boxes = boxes[0].expand(priors.shape[0], 4) if pred_boxes is None else pred_boxes
    return assigner.assign(priors, scores, pred_boxes, pred_kpts, boxes, kpts, vis, areas)


def test_dynamic_k_is_int_sum_of_top_oks_and_lowest_cost_wins():
    priors = grid_priors()
    boxes, kpts, vis, areas = gt([10, 10, 30, 50], [[20, 20], [20, 40]])
    pred_kpts = FAR.expand(priors.shape[0], 2, 2).clone()
    chosen = [index_of(priors, x, y) for x, y in ((11.5, 19.5), (19.5, 27.5), (27.5, 35.5))]
    # the same offset d for the three priors: OKS = exp(-d^2 / (2 * area * (2 sigma)^2))
    d = 3.0
    oks = math.exp(-d ** 2 / (2 * 400.0 * (2 * 0.1) ** 2))  # 0.755 -> k = int(3*0.755) = 2
    assert int(3 * oks) == 2
    for i in chosen:
        pred_kpts[i] = kpts[0] + torch.tensor([d, 0.0])
    scores = torch.full((priors.shape[0],), 0.5)
    scores[chosen[0]], scores[chosen[2]] = 0.9, 0.8  # lower cls cost for these two
    res = assign_one(SimOTAAssigner(SIGMAS), priors, pred_kpts, scores, boxes, kpts, vis, areas)
    assert res.pos_inds.tolist() == sorted([chosen[0], chosen[2]])
    assert res.gt_inds[res.pos_inds].tolist() == [1, 1]
    assert res.max_overlaps[res.pos_inds].tolist() == pytest.approx([oks, oks], rel=1e-5)
    assert int((res.gt_inds > 0).sum()) == 2


def test_exact_keypoints_give_oks_one_and_k_equal_to_their_count():
    priors = grid_priors()
    boxes, kpts, vis, areas = gt([10, 10, 30, 50], [[20, 20], [20, 40]])
    pred_kpts = FAR.expand(priors.shape[0], 2, 2).clone()
    chosen = [index_of(priors, 19.5, y) for y in (19.5, 27.5, 35.5)]
    pred_kpts[chosen] = kpts[0]
    scores = torch.full((priors.shape[0],), 0.5)
    res = assign_one(SimOTAAssigner(SIGMAS), priors, pred_kpts, scores, boxes, kpts, vis, areas)
    assert res.pos_inds.tolist() == chosen
    assert res.max_overlaps[chosen].tolist() == [1.0, 1.0, 1.0]
    assert bool((res.max_overlaps[res.gt_inds == 0] == -INF).all())


def test_k_is_at_least_one_and_outside_candidates_never_match():
    priors = grid_priors()
    boxes, kpts, vis, areas = gt([10, 10, 30, 50], [[20, 20], [20, 40]])
    pred_kpts = FAR.expand(priors.shape[0], 2, 2).clone()  # every OKS is 0: k = max(1, 0)
    outside = index_of(priors, 59.5, 59.5)
    pred_kpts[outside] = kpts[0]   # perfect, but not a candidate
    scores = torch.full((priors.shape[0],), 0.5)
    res = assign_one(SimOTAAssigner(SIGMAS), priors, pred_kpts, scores, boxes, kpts, vis, areas)
    assert int((res.gt_inds > 0).sum()) == 1
    assert int(res.gt_inds[outside]) == 0


def test_prior_claimed_by_two_gts_keeps_the_lower_cost_one():
    priors = grid_priors()
    # two people sharing a region; prior P predicts keypoints near both, nearer to GT 2
    boxes, kpts, vis, areas = gt([[10, 10, 30, 50], [12, 10, 32, 50]],
                                 [[[20, 20], [20, 40]], [[22, 20], [22, 40]]])
    p = index_of(priors, 19.5, 27.5)
    pred_kpts = FAR.expand(priors.shape[0], 2, 2).clone()
    pred_kpts[p] = kpts[1] + torch.tensor([0.5, 0.0])   # OKS with GT 2 > OKS with GT 1
    scores = torch.full((priors.shape[0],), 0.5)
    pred_boxes = torch.tensor([11.0, 10.0, 31.0, 50.0]).expand(priors.shape[0], 4)  # IoU tie
    res = assign_one(SimOTAAssigner(SIGMAS), priors, pred_kpts, scores, boxes, kpts, vis,
                     areas, pred_boxes)
    # k = 1 for both GTs (OKS sums < 2); both pick P; P keeps GT 2, GT 1 gets no prior
    assert res.pos_inds.tolist() == [p]
    assert int(res.gt_inds[p]) == 2
    expected = pose_oks(pred_kpts[p], kpts[1], vis[1], areas[1], SIGMAS)
    assert float(res.max_overlaps[p]) == pytest.approx(float(expected))


def test_cost_terms():
    assigner = SimOTAAssigner(SIGMAS)
    ious = torch.tensor([[0.5, 0.25]])
    oks = torch.tensor([[0.8, 0.1]])
    inside = torch.tensor([[True, False]])
    cost = assigner.cost(inside, ious, oks, torch.tensor([0.6]))
    expected = [3 * -math.log(0.5 + EPS) + 3 * -math.log(0.8 + EPS) - math.log(0.6),
                INF + 3 * -math.log(0.25 + EPS) + 3 * -math.log(0.1 + EPS) - math.log(0.6)]
    assert cost[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_pose_oks_normalises_by_visible_count():
    gt_kpts = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    pred = gt_kpts + torch.tensor([[3.0, 4.0], [100.0, 0.0]])   # d = 5 and 100
    area, s = 100.0, SIGMAS[0].item()
    e = math.exp(-25.0 / (2 * area * (2 * s) ** 2))
    assert float(pose_oks(pred, gt_kpts, torch.tensor([1.0, 0.0]), torch.tensor(area),
                          SIGMAS)) == pytest.approx(e, rel=1e-6)
    both = float(pose_oks(pred, gt_kpts, torch.tensor([1.0, 1.0]), torch.tensor(area), SIGMAS))
    assert both == pytest.approx(e / 2, rel=1e-5)   # second term is exp(-1250) = 0


def test_no_gt_and_no_candidate_assign_nothing():
    priors = grid_priors()
    n = priors.shape[0]
    assigner = SimOTAAssigner(SIGMAS)
    scores, pred_boxes = torch.full((n,), 0.5), torch.zeros(n, 4)
    pred_kpts = torch.zeros(n, 2, 2)
    empty = assigner.assign(priors, scores, pred_boxes, pred_kpts, torch.zeros(0, 4),
                            torch.zeros(0, 2, 2), torch.zeros(0, 2), torch.zeros(0))
    assert int(empty.gt_inds.abs().sum()) == 0 and empty.pos_inds.numel() == 0
    # a GT far outside the image: no prior in its box or centre square
    boxes, kpts, vis, areas = gt([500, 500, 520, 520], [[510, 510], [512, 512]])
    res = assigner.assign(priors, scores, pred_boxes, pred_kpts, boxes, kpts, vis, areas)
    assert res.pos_inds.numel() == 0
