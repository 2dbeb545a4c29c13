"""RTMO training objective: SimOTA targets + the six loss terms, equal to mmpose 1.3.2.

Source: mmpose ``RTMOHead.loss`` (``models/heads/hybrid_heads/rtmo_head.py``) and
``YOLOXPoseHead._get_targets[_single]`` (``yoloxpose_head.py``); spec section 4.1.

Entry point: :func:`compute_losses` (``RTMO.loss`` calls it). Loss settings are data:
:class:`LossConfig` for one stage, :class:`LossSchedule` for the two stages of an mmpose
recipe, :func:`loss_schedule` / :func:`default_loss_config` for the official presets.

Targets contract (one dict per image, numpy arrays or tensors, **network-input pixels**,
i.e. the same frame as ``inputs``):

- ``boxes`` (N, 4) xyxy; ``keypoints`` (N, K, 2) (x, y); ``keypoints_visible`` (N, K) 0/1;
  ``areas`` (N,) pixels^2 (the COCO segmentation area, scaled with the image);
- optional ``keypoints_visible_weights`` (N, K) (body7's per-dataset keypoint mask),
  ``invalid_mask`` (S, S) 1 where unlabelled/crowd people are (stage-2 ignore mask,
  mmpose ``BottomupGetHeatmapMask``; square, sampled at network-input pixel / (S - 1)).
"""
import contextlib
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from rtmo_ros.engine.skeleton import skeleton_for

from . import losses as L
from .assigner import SimOTAAssigner, pose_oks
from .model.head import decode_boxes, decode_kpt_offsets, flatten_levels


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and switches of one training stage (mmpose ``RTMOHead`` arguments).

    The defaults are mmpose's rtmo-s COCO stage 1. ``overlaps_power``: the positive
    classification target is OKS**power. ``proxy_target_cc``: the OKS loss regresses the
    regression-branch keypoints towards the (detached) DCC keypoints where those are closer
    to the GT, and the classification target becomes the DCC keypoints' OKS.
    ``use_keypoints_for_center``: SimOTA's centre region sits on the mean visible keypoint.
    ``use_aux_loss``: add the L1 loss on raw box outputs (mmpose's last 20/30 epochs).
    ``kpt_l1_weight`` > 0 adds ``loss_kpt_l1`` (:func:`keypoint_l1`, not an mmpose loss),
    which pulls regression keypoints that the OKS loss cannot reach from scratch.
    ``dcc_box_grad``: let the MLE loss reach the predicted boxes through the DCC bins, as
    mmpose does. False detaches the boxes there (not an mmpose setting): from scratch on a
    small dataset the MLE gradient through the bins outweighs the IoU loss and keeps the
    boxes from converging even when overfitting one image (see ``tiny_preset``).
    """

    cls_weight: float = 1.0       # VariFocalLoss, sum / num positives
    bbox_weight: float = 5.0      # IoULoss 'square', sum / num positives
    oks_weight: float = 30.0      # OKSLoss 'linear', per positive, then mean
    vis_weight: float = 1.0       # BCE on keypoint visibility, mean
    mle_weight: float = 1.0       # MLECCLoss (DCC), per positive, then mean
    bbox_aux_weight: float = 1.0  # L1Loss 'sum' / num positives, only with use_aux_loss
    overlaps_power: float = 0.5
    proxy_target_cc: bool = False
    use_keypoints_for_center: bool = True
    use_aux_loss: bool = False
    vfl_alpha: float = 0.75
    vfl_gamma: float = 2.0
    dcc_box_grad: bool = True
    kpt_l1_weight: float = 0.0    # not mmpose: L1 / sqrt(area) on regression keypoints


@dataclass(frozen=True)
class LossSchedule:
    """The loss stages of an mmpose RTMO recipe (0-based epochs).

    ``stage2`` applies from ``switch_epoch`` (mmpose ``RTMOModeSwitchHook``); the auxiliary
    box L1 loss is added from ``aux_epoch`` = max_epochs - num_last_epochs - 1 (mmpose
    ``YOLOXPoseModeSwitchHook`` fires when ``epoch + 1 == max_epochs - num_last_epochs``).
    """

    stage1: LossConfig
    stage2: LossConfig
    switch_epoch: int
    aux_epoch: int
    max_epochs: int

    def at(self, epoch):
        """The ``LossConfig`` in force during 0-based ``epoch``."""
        if epoch >= self.aux_epoch:
            return replace(self.stage2, use_aux_loss=True)
        if epoch >= self.switch_epoch:
            return self.stage2
        return self.stage1


# Stage-2 changes common to every recipe (all RTMO configs' RTMOModeSwitchHook).
_STAGE2 = dict(proxy_target_cc=True, mle_weight=5.0, oks_weight=10.0)


def loss_schedule(variant, dataset='coco'):
    """The official mmpose 1.3.2 loss schedule of ``variant`` ('t', 's', 'm', 'l') on
    ``dataset`` ('coco', 'body7' or 'crowdpose'; body7->CrowdPose fine-tuning = 'crowdpose').

    Sources: ``configs/body_2d_keypoint/rtmo/{coco,body7,crowdpose}/*.py``. There is no
    official rtmo-t CrowdPose recipe; it gets the CrowdPose settings of s/m/l.
    """
    if variant not in ('t', 's', 'm', 'l'):
        raise ValueError(f'unknown RTMO variant {variant!r}; choose t, s, m or l')
    small = variant in ('t', 's')
    if dataset in ('coco', 'body7'):
        # s/t: MLE weight 1 from the start, keypoint-centred SimOTA, OKS**0.5 throughout.
        # m/l: MLE weight 1e-2, box centres, and OKS**1 + cls weight 2 after the switch.
        stage1 = LossConfig(mle_weight=1.0 if small else 1e-2, use_keypoints_for_center=small)
        late = {} if small else dict(overlaps_power=1.0, cls_weight=2.0)
        epochs, switch, last = 600, 280, 20
    elif dataset == 'crowdpose':
        stage1 = LossConfig(mle_weight=1e-3, use_keypoints_for_center=False)
        late = dict(overlaps_power=1.0, cls_weight=2.0)
        epochs, switch, last = 700, 350, 30
    else:
        raise ValueError(f'unknown dataset {dataset!r} for the RTMO loss presets; choose '
                         "'coco', 'body7' or 'crowdpose'")
    return LossSchedule(stage1=stage1, stage2=replace(stage1, **_STAGE2, **late),
                        switch_epoch=switch, aux_epoch=epochs - last - 1, max_epochs=epochs)


def default_loss_config(variant, num_keypoints):
    """Stage-1 settings of the mmpose config matching a checkpoint (17 kpts: COCO/body7,
    14 kpts: CrowdPose)."""
    datasets = {17: 'coco', 14: 'crowdpose'}
    if num_keypoints not in datasets:
        raise ValueError(f'no official RTMO loss preset for {num_keypoints} keypoints (17: '
                         'COCO, 14: CrowdPose); pass a LossConfig explicitly')
    return loss_schedule(variant, datasets[num_keypoints]).stage1


class FlatPredictions(NamedTuple):
    """Per-prior training predictions of a batch; P priors, levels in stride order.

    cls (B, P, 1), kpt_vis (B, P, K) logits; bbox_raw (B, P, 4) stride units; boxes
    (B, P, 4) decoded xyxy px; kpts (B, P, K, 2) decoded regression keypoints px; pose_vecs
    (B, P, Cv); priors (P, 4) as (x, y, stride, stride) px.
    """

    cls: torch.Tensor
    bbox_raw: torch.Tensor
    boxes: torch.Tensor
    kpts: torch.Tensor
    kpt_vis: torch.Tensor
    pose_vecs: torch.Tensor
    priors: torch.Tensor


class Targets(NamedTuple):
    """Assignment of a batch. ``pos`` (B*P,) bool; per positive (image-major, prior order):
    boxes (M, 4), kpts (M, K, 2), vis (M, K), vis_weights (M, K), areas (M,), priors (M, 4),
    overlaps (M,) matched OKS. ``obj_weights`` (B*P, 1) ignore-mask weights."""

    pos: torch.Tensor
    boxes: torch.Tensor
    kpts: torch.Tensor
    vis: torch.Tensor
    vis_weights: torch.Tensor
    areas: torch.Tensor
    priors: torch.Tensor
    overlaps: torch.Tensor
    obj_weights: torch.Tensor


def compute_losses(model, inputs, targets, cfg=None):
    """mmpose's ``RTMOHead.loss`` for a batch, after mmengine's per-entry mean.

    The forward always runs in training mode (BatchNorm on batch statistics, keypoint
    regression branch on), as in an mmpose training step. A model in train mode updates its
    BatchNorm running statistics as usual; a model in eval mode is left unchanged (no
    running-statistics update, its mode restored), e.g. for a validation loss.

    Args:
        model: ``rtmo_train.model.rtmo.RTMO``.
        inputs: (B, 3, H, W) float network input, BGR 0..255 (see ``rtmo.py``).
        targets: list of B per-image dicts, see the module docstring.
        cfg: ``LossConfig``; None = stage 1 of the official preset for the model
            (``default_loss_config(model.cfg.variant, model.cfg.num_keypoints)``).

    Returns:
        dict of () tensors: loss_cls, loss_bbox, loss_oks, loss_vis, loss_mle (and
        loss_bbox_aux with ``use_aux_loss``) carrying gradients; num_samples and overlaps
        (mean matched OKS) detached, for logging. Sum the ``loss_*`` entries to train
        (:func:`total_loss`).
    """
    if cfg is None:
        cfg = default_loss_config(model.cfg.variant, model.cfg.num_keypoints)
    param = next(model.parameters())
    inputs = torch.as_tensor(inputs, dtype=param.dtype, device=param.device)
    if len(targets) != inputs.shape[0]:
        raise ValueError(f'got {len(targets)} target dicts for a batch of {inputs.shape[0]} '
                         'images; pass one dict per image')
    gts = [targets_to_tensors(t, i, model.cfg.num_keypoints, param) for i, t in
           enumerate(targets)]
    with training_mode(model):
        flat = flatten_predictions(model.head, model(inputs))
        tg = assign_targets(flat, gts, SimOTAAssigner(
            sigmas=keypoint_sigmas(model),
            use_keypoints_for_center=cfg.use_keypoints_for_center))
        return head_losses(model.head.dcc, flat, tg, cfg, keypoint_sigmas(model))


def total_loss(losses):
    """Sum of the ``loss*`` entries (mmengine ``parse_losses``)."""
    return sum(v for k, v in losses.items() if k.startswith('loss'))


@contextlib.contextmanager
def training_mode(model):
    """Run the block in train mode; an eval-mode model is left exactly as it was.

    For an eval-mode model the BatchNorm layers normalise with batch statistics without
    updating their running statistics (``track_running_stats`` off for the block), then
    every module gets its previous mode back.
    """
    if model.training:
        yield
        return
    modes = {m: m.training for m in model.modules()}
    bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    tracking = [m.track_running_stats for m in bn]
    model.train()
    for m in bn:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, track in zip(bn, tracking):
            m.track_running_stats = track
        for m, mode in modes.items():
            m.training = mode


@contextlib.contextmanager
def single_sample_batchnorm_eval(module, batch_size):
    """With a single positive in the whole batch, BatchNorm layers of ``module`` (the DCC's
    BatchNorm1d) use their running statistics: batch statistics of one sample do not exist
    and torch (hence mmpose) would raise. Otherwise a no-op."""
    bn = [m for m in module.modules()
          if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
    if batch_size != 1 or not bn:
        yield
        return
    for m in bn:
        m.eval()
    try:
        yield
    finally:
        for m in bn:
            m.train()


def keypoint_sigmas(model):
    """OKS sigmas (K,): the checkpoint's ``head.loss_oks.sigmas``, else the skeleton's."""
    sigmas = model.head.loss_oks.sigmas
    if bool((sigmas > 0).all()):
        return sigmas
    return torch.as_tensor(skeleton_for(model.cfg.num_keypoints).sigmas_array(),
                           device=sigmas.device)


def targets_to_tensors(target, index, num_keypoints, like):
    """One image's target dict -> dict of tensors on ``like``'s device/dtype, checked."""
    def get(key, shape):
        if key not in target:
            raise KeyError(f'targets[{index}] has no {key!r}; each target dict needs boxes, '
                           'keypoints, keypoints_visible and areas')
        value = np.asarray(target[key], dtype=np.float32)
        try:
            value = value.reshape(-1, *shape)
        except ValueError:
            raise ValueError(f'targets[{index}][{key!r}] has shape {value.shape}; expected '
                             f'(N, {", ".join(map(str, shape))})') from None
        return torch.as_tensor(value, device=like.device).to(like.dtype)

    out = dict(boxes=get('boxes', (4,)), keypoints=get('keypoints', (num_keypoints, 2)),
               keypoints_visible=get('keypoints_visible', (num_keypoints,)),
               areas=get('areas', ()))
    n = out['boxes'].shape[0]
    if any(v.shape[0] != n for v in out.values()):
        raise ValueError(f'targets[{index}]: boxes, keypoints, keypoints_visible and areas '
                         f'must describe the same number of people, got '
                         f'{[tuple(v.shape) for v in out.values()]}')
    if target.get('keypoints_visible_weights') is not None:
        out['keypoints_visible_weights'] = get('keypoints_visible_weights', (num_keypoints,))
    else:
        out['keypoints_visible_weights'] = torch.ones_like(out['keypoints_visible'])
    if target.get('invalid_mask') is not None:
        out['invalid_mask'] = torch.as_tensor(np.asarray(target['invalid_mask']),
                                              device=like.device).to(like.dtype)
    return out


def flatten_predictions(head, out):
    """Training ``HeadOutput`` (per level) -> ``FlatPredictions`` (per prior)."""
    if out.kpt_offsets is None:
        raise RuntimeError('the head output has no keypoint offsets: the losses need a '
                           'forward in training mode (model.train())')
    xy, strides = head.priors(out, dtype=out.cls[0].dtype)
    bbox_raw = flatten_levels(out.bbox)
    return FlatPredictions(
        cls=flatten_levels(out.cls), bbox_raw=bbox_raw,
        boxes=decode_boxes(bbox_raw, xy, strides),
        kpts=decode_kpt_offsets(flatten_levels(out.kpt_offsets), xy, strides),
        kpt_vis=flatten_levels(out.kpt_vis), pose_vecs=flatten_levels(out.pose_vec),
        priors=torch.cat((xy, strides[:, None], strides[:, None]), dim=1))


@torch.no_grad()
def ignore_weights(mask, kpts, vis_prob):
    """(P, 1) objectness weights: 1 - mask sampled at each prior's mean confident keypoint.

    mmpose ``_get_targets_single``: keypoints with sigmoid(vis) > 0.3 are averaged, mapped
    to grid_sample coordinates with the mask's width for both axes.
    """
    conf = (vis_prob.unsqueeze(-1) > 0.3).to(kpts)
    mean = (kpts * conf).sum(dim=1) / conf.sum(dim=1).clamp(min=1e-8)
    grid = (mean / (mask.shape[-1] - 1) * 2 - 1).reshape(1, -1, 1, 2)
    sampled = F.grid_sample(mask[None, None], grid, mode='bilinear', padding_mode='zeros',
                            align_corners=False)  # mmpose's (torch default) convention
    return 1.0 - sampled.reshape(-1, 1)


@torch.no_grad()
def assign_targets(flat, gts, assigner):
    """Run SimOTA per image on detached predictions; gather the per-positive targets.

    Runs in float32 with autocast off, whatever the forward's precision (mmpose turns
    autocast off for the BCE cost, which is not AMP-safe; the rest is kept exact too).
    """
    with torch.autocast(flat.cls.device.type, enabled=False):
        flat = FlatPredictions(*(x.float() for x in flat))
        return _assign_float(flat, gts, assigner)


def _assign_float(flat, gts, assigner):
    """``assign_targets`` body, float32 tensors."""
    scores = flat.cls.clip(min=-1e4, max=1e4).sigmoid()
    scores = torch.nan_to_num(scores, nan=0.0)
    vis_prob = flat.kpt_vis.clip(min=-1e4, max=1e4).sigmoid()
    parts, weights = [], []
    for b, gt in enumerate(gts):
        # objectness is fixed at sigmoid(1e4) = 1 in RTMO, so the score is sqrt(cls prob)
        res = assigner.assign(flat.priors, scores[b, :, 0].sqrt(), flat.boxes[b],
                              flat.kpts[b], gt['boxes'], gt['keypoints'],
                              gt['keypoints_visible'], gt['areas'])
        pos = res.pos_inds
        g = res.gt_inds[pos] - 1
        parts.append((res.gt_inds > 0, gt['boxes'][g], gt['keypoints'][g],
                      gt['keypoints_visible'][g], gt['keypoints_visible_weights'][g],
                      gt['areas'][g], flat.priors[pos], res.max_overlaps[pos]))
        mask = gt.get('invalid_mask')
        if mask is not None and bool((mask != 0).any()):
            weights.append(ignore_weights(mask, flat.kpts[b], vis_prob[b]))
        else:
            weights.append(flat.cls.new_ones((flat.priors.shape[0], 1)))
    fields = [torch.cat(x) for x in zip(*parts)]
    return Targets(*fields, obj_weights=torch.cat(weights))


def mean_over_processes(value):
    """mmpose ``reduce_mean``: average a tensor over distributed processes, if any."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value.div_(dist.get_world_size()))
    return value


def head_losses(dcc, flat, tg, cfg, sigmas):
    """The loss dict from flat predictions and assigned targets (mmpose ``RTMOHead.loss``)."""
    num_pos = torch.tensor(float(tg.pos.sum()), device=flat.cls.device)
    n = mean_over_processes(num_pos).clamp(min=1.0)
    cls_all = flat.cls.reshape(-1, 1)
    cls_target = torch.zeros_like(cls_all)
    out = dict()
    if int(num_pos) > 0:
        boxes = flat.boxes.reshape(-1, 4)[tg.pos]
        out['loss_bbox'] = L.iou_square_loss(boxes, tg.boxes).sum() * cfg.bbox_weight / n
        if cfg.use_aux_loss:
            aux = L.box_aux_targets(tg.boxes, tg.priors)
            out['loss_bbox_aux'] = L.l1_sum(flat.bbox_raw.reshape(-1, 4)[tg.pos],
                                            aux) * cfg.bbox_aux_weight / n
        k = flat.kpts.shape[-2]
        out['loss_vis'] = L.visibility_bce(flat.kpt_vis.reshape(-1, k)[tg.pos], tg.vis,
                                           tg.vis_weights) * cfg.vis_weight
        overlaps = keypoint_losses(dcc, flat, tg, boxes, cfg, sigmas, out)
        cls_target[tg.pos] = overlaps.pow(cfg.overlaps_power).unsqueeze(1).to(cls_target)
        out['overlaps'] = overlaps.mean().detach()
    out['loss_cls'] = L.varifocal_loss(cls_all, cls_target, tg.obj_weights, cfg.vfl_alpha,
                                       cfg.vfl_gamma).sum() * cfg.cls_weight / n
    # mmpose omits the positive-only terms when nothing is positive (and loss_mle at weight
    # 0); graph-connected zeros keep the logged keys and the DDP graph uniform
    zero = (flat.boxes.sum() + flat.kpts.sum() + flat.kpt_vis.sum()) * 0.0
    keys = ('loss_bbox', 'loss_vis', 'loss_mle', 'loss_oks') + \
        (('loss_kpt_l1',) if cfg.kpt_l1_weight > 0 else ())
    for key in keys:
        out.setdefault(key, zero)
    out.setdefault('overlaps', zero.detach())
    out['num_samples'] = n.detach()
    return out


def keypoint_losses(dcc, flat, tg, boxes, cfg, sigmas, out):
    """Add loss_mle and loss_oks to ``out``; return the (M,) classification overlaps.

    ``boxes`` (M, 4) are the positives' decoded boxes (with gradient: the DCC bins follow
    them, as in mmpose, unless ``cfg.dcc_box_grad`` is False). With ``proxy_target_cc`` the
    overlaps are the DCC keypoints' OKS.
    """
    k = flat.kpts.shape[-2]
    kpts_reg = flat.kpts.reshape(-1, k, 2)[tg.pos]
    kpts_cc = None
    if cfg.mle_weight > 0 or cfg.proxy_target_cc:
        if not cfg.dcc_box_grad:
            boxes = boxes.detach()
        pose_vecs = flat.pose_vecs.reshape(-1, flat.pose_vecs.shape[-1])[tg.pos]
        with single_sample_batchnorm_eval(dcc, pose_vecs.shape[0]):
            cc = dcc(pose_vecs, boxes, tg.priors[:, :2])
        kpts_cc = cc.keypoints()
        hm_x, hm_y = L.laplace_target_heatmaps(tg.kpts, cc.bins_x, cc.bins_y,
                                               dcc.sigmas(pose_vecs), tg.areas)
        out['loss_mle'] = L.mle_cc_loss(cc.prob_x, cc.prob_y, hm_x, hm_y,
                                        tg.vis).mean() * cfg.mle_weight
    if cfg.kpt_l1_weight > 0:
        out['loss_kpt_l1'] = keypoint_l1(kpts_reg, tg) * cfg.kpt_l1_weight
    if not cfg.proxy_target_cc:
        oks = L.oks_loss(kpts_reg, tg.kpts, tg.vis, tg.areas, sigmas)
        out['loss_oks'] = oks.mean() * cfg.oks_weight
        return tg.overlaps
    with torch.no_grad():
        # regress towards the DCC keypoints only where they beat the regression branch
        closer = (torch.norm(kpts_reg - tg.kpts, dim=-1)
                  > torch.norm(kpts_cc - tg.kpts, dim=-1)).to(tg.vis)
        overlaps = pose_oks(kpts_cc, tg.kpts, tg.vis, tg.areas, sigmas)
    oks = L.oks_loss(kpts_reg, kpts_cc.detach(), tg.vis * closer, tg.areas, sigmas)
    out['loss_oks'] = oks.mean() * cfg.oks_weight
    return overlaps


def keypoint_l1(kpts_reg, tg):
    """Mean L1 distance of the visible regression-branch keypoints to the GT, in units of
    sqrt(area). Not an mmpose loss: the OKS loss alone gives no gradient to keypoints that
    start more than a few OKS sigmas away, which from scratch is most of them."""
    scale = tg.areas.clamp(min=1.0).sqrt()[:, None]
    dist = (kpts_reg - tg.kpts).abs().sum(-1) / scale
    return (dist * tg.vis).sum() / tg.vis.sum().clamp(min=1.0)
