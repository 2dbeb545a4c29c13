"""Loss terms (rtmo_train.losses) against hand-computed values; loss presets and stages."""
import math

import pytest
import torch

from rtmo_ros.engine.skeleton import COCO17
from rtmo_train import losses as L
from rtmo_train.assigner import SimOTAAssigner
from rtmo_train.criterion import (
    FlatPredictions,
    LossConfig,
    assign_targets,
    default_loss_config,
    head_losses,
    ignore_weights,
    loss_schedule,
)
from rtmo_train.model.dcc import DCC
from rtmo_train.model.head import decode_boxes


def bce(x, t):
    """BCE with logits by hand."""
    p = 1 / (1 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_varifocal_weights_negatives_and_positives():
    logits = torch.tensor([[2.0], [-1.0], [30.0]])
    target = torch.tensor([[0.0], [0.6], [0.0]])
    weight = torch.tensor([[1.0], [1.0], [0.5]])
    loss = L.varifocal_loss(logits, target, weight).flatten().tolist()
    sig = 1 / (1 + math.exp(-2.0))
    # negative: alpha * sigmoid^2 * BCE(x, 0)
    assert loss[0] == pytest.approx(0.75 * sig ** 2 * bce(2.0, 0.0), rel=1e-5)
    # positive: weight = the soft target itself
    assert loss[1] == pytest.approx(0.6 * bce(-1.0, 0.6), rel=1e-5)
    # logit clipped to 10 inside the BCE, raw logit in the modulating factor, ignore weight
    assert loss[2] == pytest.approx(0.5 * 0.75 * 1.0 * bce(10.0, 0.0), rel=1e-5)


def test_varifocal_zeroes_non_finite():
    loss = L.varifocal_loss(torch.tensor([[float('nan')], [0.0]]), torch.zeros(2, 1))
    assert loss[0, 0] == 0 and loss[1, 0] > 0


def test_iou_square_loss():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    # IoU 1, 50/150 = 1/3, 0 (clamped to 1e-16)
    assert L.iou_square_loss(a, b).tolist() == pytest.approx([0.0, 1 - 1 / 9, 1.0])


def test_oks_loss_divides_weights_by_k_not_visible_count():
    k = 17
    sigmas = torch.full((k,), 0.05)
    gt = torch.zeros(1, k, 2)
    vis = torch.zeros(1, k)
    vis[0, 0] = 1
    # one visible keypoint, predicted exactly: OKS term 1/K, loss 1 - 1/17
    assert float(L.oks_loss(gt.clone(), gt, vis, torch.tensor([100.0]), sigmas)) == \
        pytest.approx(1 - 1 / k)
    pred = gt.clone()
    pred[0, 0] = torch.tensor([3.0, 4.0])
    e = math.exp(-25.0 / (2 * 100.0 * (2 * 0.05) ** 2))
    assert float(L.oks_loss(pred, gt, vis, torch.tensor([100.0]), sigmas)) == \
        pytest.approx(1 - e / k, rel=1e-6)


def test_visibility_bce_weights_multiply_without_renormalising():
    logits = torch.tensor([[0.5, -2.0]])
    target = torch.tensor([[1.0, 0.0]])
    loss = L.visibility_bce(logits, target, torch.tensor([[1.0, 0.0]]))
    assert float(loss) == pytest.approx(bce(0.5, 1.0) / 2, rel=1e-6)


def test_laplace_targets_and_mle_loss():
    area, sigma = 64.0, 0.5          # A = sqrt(area) = 8
    gt = torch.tensor([[[2.0, 3.0]]])
    bins_x = torch.tensor([[0.0, 2.0, 4.0]])
    bins_y = torch.tensor([[3.0, 11.0]])
    hm_x, hm_y = L.laplace_target_heatmaps(gt, bins_x, bins_y, torch.tensor([[sigma]]),
                                           torch.tensor([area]))
    lap = [math.exp(-abs(b - 2.0) / (8 * sigma) / 2) / sigma for b in (0.0, 2.0, 4.0)]
    assert hm_x[0, 0].tolist() == pytest.approx(lap, rel=1e-6)
    assert hm_y[0, 0].tolist() == pytest.approx([1 / sigma, math.exp(-1.0) / sigma], rel=1e-6)
    # predictions: all mass on the GT bins -> likelihood (1/s)^2, loss -log(4 + 1e-4)
    px, py = torch.tensor([[[0.0, 1.0, 0.0]]]), torch.tensor([[[1.0, 0.0]]])
    loss = L.mle_cc_loss(px, py, hm_x, hm_y, torch.ones(1, 1))
    assert float(loss) == pytest.approx(-math.log(4 + 1e-4), rel=1e-6)
    assert float(L.mle_cc_loss(px, py, hm_x, hm_y, torch.zeros(1, 1))) == 0.0


def test_box_aux_targets_invert_the_box_decoding():
    priors = torch.tensor([[7.5, 23.5, 16.0, 16.0], [15.5, 15.5, 32.0, 32.0]])
    gt = torch.tensor([[0.0, 10.0, 30.0, 50.0], [5.0, 6.0, 100.0, 60.0]])
    raw = L.box_aux_targets(gt, priors)
    decoded = decode_boxes(raw[None], priors[:, :2], priors[:, 2])[0]
    assert torch.allclose(decoded, gt, atol=1e-4)
    assert float(L.l1_sum(raw, raw + 0.5)) == pytest.approx(0.5 * 8)


def test_presets_follow_the_mmpose_configs():
    s = loss_schedule('s', 'coco')
    assert s.stage1 == LossConfig()   # defaults are rtmo-s COCO stage 1
    assert (s.stage1.mle_weight, s.stage1.oks_weight, s.stage1.overlaps_power) == (1.0, 30, 0.5)
    assert s.stage1.use_keypoints_for_center and not s.stage1.proxy_target_cc
    assert (s.stage2.mle_weight, s.stage2.oks_weight, s.stage2.cls_weight) == (5.0, 10.0, 1.0)
    assert s.stage2.proxy_target_cc and s.stage2.overlaps_power == 0.5
    m = loss_schedule('m', 'body7')
    assert m.stage1.mle_weight == 1e-2 and not m.stage1.use_keypoints_for_center
    assert (m.stage2.overlaps_power, m.stage2.cls_weight, m.stage2.mle_weight) == (1.0, 2.0, 5.0)
    c = loss_schedule('l', 'crowdpose')
    assert c.stage1.mle_weight == 1e-3 and not c.stage1.use_keypoints_for_center
    assert (c.switch_epoch, c.aux_epoch, c.max_epochs) == (350, 669, 700)
    assert default_loss_config('t', 17) == loss_schedule('t', 'coco').stage1
    assert default_loss_config('m', 14) == loss_schedule('m', 'crowdpose').stage1
    with pytest.raises(ValueError, match='21 keypoints'):
        default_loss_config('s', 21)
    with pytest.raises(ValueError, match='dataset'):
        loss_schedule('s', 'mpii')


def test_schedule_stage_boundaries():
    s = loss_schedule('l', 'coco')
    assert s.at(279) == s.stage1
    assert s.at(280) == s.stage2 and not s.at(578).use_aux_loss
    assert s.at(579).use_aux_loss and s.at(599).proxy_target_cc   # last 21 epochs


def synthetic_flat(num_priors=16, k=17, channels=32, seed=0):
    """Random per-prior predictions of one image on a 4x4 grid of stride 16."""
    g = torch.Generator().manual_seed(seed)
    c = torch.arange(4, dtype=torch.float32) * 16 + 7.5
    yy, xx = torch.meshgrid(c, c, indexing='ij')
    priors = torch.stack([xx.flatten(), yy.flatten(), torch.full((16,), 16.0),
                          torch.full((16,), 16.0)], dim=1)
    bbox_raw = torch.randn(1, num_priors, 4, generator=g) * 0.1
    return FlatPredictions(
        cls=torch.randn(1, num_priors, 1, generator=g, requires_grad=True),
        bbox_raw=bbox_raw, boxes=decode_boxes(bbox_raw, priors[:, :2], priors[:, 2]),
        kpts=torch.rand(1, num_priors, k, 2, generator=g) * 64,
        kpt_vis=torch.randn(1, num_priors, k, generator=g),
        pose_vecs=torch.randn(1, num_priors, channels, generator=g), priors=priors)


def test_image_without_people_gives_negative_only_cls_loss():
    flat = synthetic_flat()
    no_gt = dict(boxes=torch.zeros(0, 4), keypoints=torch.zeros(0, 17, 2),
                 keypoints_visible=torch.zeros(0, 17), areas=torch.zeros(0),
                 keypoints_visible_weights=torch.zeros(0, 17))
    sigmas = torch.as_tensor(COCO17.sigmas_array())
    tg = assign_targets(flat, [no_gt], SimOTAAssigner(sigmas))
    out = head_losses(DCC(32, 17), flat, tg, LossConfig(), sigmas)
    assert float(out['num_samples']) == 1.0   # max(num_pos, 1)
    for key in ('loss_bbox', 'loss_vis', 'loss_mle', 'loss_oks'):
        assert float(out[key].detach()) == 0.0, key
    x = flat.cls.detach().flatten()
    expected = sum(0.75 * torch.sigmoid(v).item() ** 2 * bce(v.item(), 0.0) for v in x)
    assert float(out['loss_cls'].detach()) == pytest.approx(expected, rel=1e-5)
    out['loss_cls'].backward()
    assert flat.cls.grad is not None and float(flat.cls.grad.abs().sum()) > 0


def test_ignore_mask_zeroes_the_weight_of_priors_looking_at_crowds():
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1.0     # an unlabelled crowd on the left half
    kpts = torch.tensor([[[10.0, 20.0], [12.0, 22.0]],     # inside the crowd
                         [[50.0, 20.0], [52.0, 22.0]],     # outside
                         [[10.0, 20.0], [50.0, 20.0]]])    # only the right one is confident
    vis_prob = torch.tensor([[0.9, 0.9], [0.9, 0.9], [0.1, 0.9]])
    w = ignore_weights(mask, kpts, vis_prob)
    assert w.shape == (3, 1)
    assert w[:, 0].tolist() == pytest.approx([0.0, 1.0, 1.0])


def test_single_positive_in_a_training_batch_does_not_break_the_dcc():
    """One positive: BatchNorm1d cannot use batch statistics (mmpose would raise)."""
    flat = synthetic_flat(seed=1)
    one = dict(boxes=torch.tensor([[8.0, 8.0, 56.0, 56.0]]),
               keypoints=torch.rand(1, 17, 2) * 40 + 12, keypoints_visible=torch.ones(1, 17),
               areas=torch.tensor([1500.0]), keypoints_visible_weights=torch.ones(1, 17))
    sigmas = torch.as_tensor(COCO17.sigmas_array())
    tg = assign_targets(flat, [one], SimOTAAssigner(sigmas))
    assert int(tg.pos.sum()) == 1          # random keypoints: OKS sum < 2, so k = 1
    dcc = DCC(32, 17).train()
    out = head_losses(dcc, flat, tg, LossConfig(), sigmas)
    assert dcc.pose_to_kpts[1].training    # mode restored
    assert all(bool(torch.isfinite(v.detach())) for v in out.values())
    assert float(out['loss_mle'].detach()) != 0.0   # computed (it may be negative)


def test_keypoint_l1_is_off_by_default_and_normalised_by_sqrt_area():
    flat = synthetic_flat(seed=2)
    person = dict(boxes=torch.tensor([[8.0, 8.0, 56.0, 56.0]]),
                  keypoints=torch.rand(1, 17, 2) * 40 + 12, keypoints_visible=torch.ones(1, 17),
                  areas=torch.tensor([1600.0]), keypoints_visible_weights=torch.ones(1, 17))
    person['keypoints_visible'][0, :5] = 0
    sigmas = torch.as_tensor(COCO17.sigmas_array())
    tg = assign_targets(flat, [person], SimOTAAssigner(sigmas))
    assert 'loss_kpt_l1' not in head_losses(DCC(32, 17), flat, tg, LossConfig(), sigmas)
    out = head_losses(DCC(32, 17), flat, tg, LossConfig(kpt_l1_weight=2.0), sigmas)
    reg = flat.kpts.reshape(-1, 17, 2)[tg.pos]
    vis = tg.vis
    expected = 2.0 * ((reg - tg.kpts).abs().sum(-1) / 40.0 * vis).sum() / vis.sum()
    assert float(out['loss_kpt_l1'].detach()) == pytest.approx(float(expected), rel=1e-5)
