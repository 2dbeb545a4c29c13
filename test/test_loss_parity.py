"""Training-loss parity with mmpose 1.3.2 on the shared rtmo-s fixture batch.

``rtmo-s_coco_seed1_loss.npz`` holds what mmpose's ``RTMOHead.loss`` returned in train mode
for 2 images (4 people); mmengine then takes the mean of each entry. ``load_model`` returns
an eval-mode model: ``loss`` must still run the training forward (batch statistics).
"""
import numpy as np
import pytest
import torch

from rtmo_train import load_model
from rtmo_train import losses as L
from rtmo_train.assigner import SimOTAAssigner
from rtmo_train.criterion import (
    assign_targets,
    default_loss_config,
    flatten_predictions,
    keypoint_sigmas,
    loss_schedule,
    training_mode,
)

REL_TOL = 1e-3  # brief: each loss within 1e-3 relative of mmpose's
LOSS_KEYS = ('loss_cls', 'loss_bbox', 'loss_oks', 'loss_vis', 'loss_mle')
GT_KEYS = ('boxes', 'keypoints', 'keypoints_visible', 'areas')


@pytest.fixture(scope='module')
def ref(parity_dir):
    return dict(np.load(parity_dir / 'rtmo-s_coco_seed1_loss.npz'))


@pytest.fixture(scope='module')
def model(parity_dir):
    return load_model(parity_dir / 'rtmo-s_coco_seed1.pth')


@pytest.fixture(scope='module')
def batch(ref):
    inputs = torch.from_numpy(ref['inputs'])
    targets = [{k: ref[f'img{b}_{k}'] for k in GT_KEYS} for b in range(inputs.shape[0])]
    return inputs, targets


@pytest.fixture(scope='module')
def result(model, batch):
    """(losses, state_dict before, state_dict after) of one ``model.loss`` call."""
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model.loss(*batch)
    return losses, before, model.state_dict()


@pytest.mark.parametrize('key', LOSS_KEYS)
def test_loss_matches_mmpose(result, ref, key):
    ours = float(result[0][key].detach())
    theirs = float(ref[f'loss__{key}'].mean())  # mmengine parse_losses: mean per entry
    assert ours == pytest.approx(theirs, rel=REL_TOL), key


def test_num_samples_and_overlaps_match(result, ref):
    losses = result[0]
    assert float(losses['num_samples']) == float(ref['loss__num_samples']) == 4.0
    assert float(losses['overlaps']) == pytest.approx(float(ref['loss__overlaps'].mean()),
                                                      rel=REL_TOL)


def test_losses_carry_gradients_and_logs_do_not(result):
    losses = result[0]
    for key in LOSS_KEYS:
        assert losses[key].requires_grad and losses[key].ndim == 0, key
    assert not losses['num_samples'].requires_grad
    assert not losses['overlaps'].requires_grad


def test_eval_model_left_unchanged(model, result):
    _, before, after = result
    assert not model.training and not any(m.training for m in model.modules())
    for k, v in before.items():
        assert torch.equal(v, after[k]), f'{k} changed by loss() on an eval-mode model'


def test_per_positive_targets_match(model, batch, ref):
    """SimOTA's matched OKS and the per-positive OKS loss equal mmpose's arrays."""
    inputs, targets = batch
    cfg = default_loss_config('s', 17)
    gts = [{k: torch.as_tensor(t[k]) for k in GT_KEYS} for t in targets]
    for gt in gts:
        gt['keypoints_visible_weights'] = torch.ones_like(gt['keypoints_visible'])
    sigmas = keypoint_sigmas(model)
    with torch.no_grad(), training_mode(model):
        flat = flatten_predictions(model.head, model(inputs))
        tg = assign_targets(flat, gts, SimOTAAssigner(
            sigmas, use_keypoints_for_center=cfg.use_keypoints_for_center))
    np.testing.assert_allclose(tg.overlaps.numpy(), ref['loss__overlaps'][:, 0], rtol=REL_TOL)
    kpts = flat.kpts.reshape(-1, 17, 2)[tg.pos]
    oks = L.oks_loss(kpts, tg.kpts, tg.vis, tg.areas, sigmas) * cfg.oks_weight
    np.testing.assert_allclose(oks.numpy(), ref['loss__loss_oks'], rtol=REL_TOL)


def test_stage2_with_aux_runs_and_backpropagates(model, batch):
    """The late-stage settings (proxy targets, aux L1) give finite losses and gradients.

    Run at 320x320 (the batch halved, as mmpose's random batch resize would) and with the
    backbone and neck frozen to keep the backward pass cheap.
    """
    cfg = loss_schedule('s', 'coco').at(599)
    assert cfg.proxy_target_cc and cfg.use_aux_loss
    inputs = torch.nn.functional.interpolate(batch[0], size=(320, 320), mode='bilinear')
    targets = [dict(boxes=t['boxes'] / 2, keypoints=t['keypoints'] / 2, areas=t['areas'] / 4,
                    keypoints_visible=t['keypoints_visible']) for t in batch[1]]
    trunk = [p for m in (model.backbone, model.neck) for p in m.parameters()]
    try:
        for p in trunk:  # gradients of the head only: the backward stays cheap
            p.requires_grad_(False)
        losses = model.loss(inputs, targets, cfg)
        sum(v for k, v in losses.items() if k.startswith('loss')).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
    finally:
        for p in trunk:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
    assert set(LOSS_KEYS) | {'loss_bbox_aux'} <= set(losses)
    assert float(losses['num_samples']) >= len(targets)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    assert all(g is None or bool(torch.isfinite(g).all()) for g in grads.values())
    for part in ('head_module.out_kpt_reg', 'head_module.out_bbox', 'head_module.out_cls',
                 'head_module.out_kpt_vis', 'dcc.sigma_fc', 'dcc.pose_to_kpts', 'dcc.gau'):
        norm = sum(float(g.abs().sum()) for name, g in grads.items()
                   if name.startswith('head.' + part) and g is not None)
        assert norm > 0, f'no gradient reaches head.{part}'
