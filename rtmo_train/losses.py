"""The RTMO loss terms as plain functions, each equal to its mmpose 1.3.2 counterpart.

mmpose builds these as registry objects with a ``loss_weight`` (``models/losses/*``); here they
are unweighted functions and ``rtmo_train.criterion`` applies the weights and the
normalisation by the number of positives. Every function keeps the graph (no ``no_grad``)
and works on float tensors; shapes are given per function (N = positive priors, K = keypoints).
"""
import torch
import torch.nn.functional as F


def aligned_box_iou(boxes1, boxes2, eps=1e-6):
    """IoU of row-aligned boxes, as mmpose's ``bbox_overlaps(..., is_aligned=True)``.

    Args:
        boxes1, boxes2: (..., 4) xyxy pixels, same shape.
        eps: floor of the union (mmpose's default 1e-6).

    Returns:
        (...,) IoU in [0, 1].
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = torch.clamp(area1 + area2 - overlap, min=eps)
    return overlap / union


def varifocal_loss(logits, target, weight=None, alpha=0.75, gamma=2.0):
    """Per-element varifocal loss (mmpose ``VariFocalLoss.criterion``, inf/nan zeroed).

    Negatives (target <= 1e-4) are down-weighted by ``alpha * sigmoid(x)**gamma``; positives
    are weighted by their soft target (the matched OKS to some power). The logit is clipped
    to +-10 inside the BCE only, the modulating factor uses the raw logit, as in mmpose.

    Args:
        logits: (P, C) raw classification logits.
        target: (P, C) soft targets in [0, 1].
        weight: optional (P, C) or (P,) per-prior weight (the objectness/ignore weight).

    Returns:
        (P, C) loss, not reduced.
    """
    label = (target > 1e-4).to(target)
    modulation = alpha * logits.sigmoid().pow(gamma) * (1 - label) + target
    bce = F.binary_cross_entropy_with_logits(logits.clip(min=-10, max=10), target,
                                             reduction='none')
    loss = bce * modulation
    if weight is not None:
        loss = loss * (weight.unsqueeze(1) if weight.dim() == 1 else weight)
    return torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))


def iou_square_loss(pred_boxes, target_boxes, eps=1e-16):
    """Per-box ``1 - IoU**2`` (mmpose ``IoULoss(mode='square', eps=1e-16)``).

    Args:
        pred_boxes, target_boxes: (N, 4) xyxy pixels.

    Returns:
        (N,) loss.
    """
    ious = aligned_box_iou(pred_boxes, target_boxes).clamp(min=eps)
    return 1 - ious.pow(2)


def oks_loss(pred_kpts, target_kpts, weights, areas, sigmas, eps=1e-8):
    """Per-instance ``1 - OKS`` (mmpose ``OKSLoss(mode='linear', norm_target_weight=False)``).

    Unlike the COCO metric (and the assigner's OKS), the keypoint weights are divided by K,
    not by the number of visible keypoints: an instance with few labelled joints can never
    reach a loss of 0.

    Args:
        pred_kpts, target_kpts: (N, K, 2) pixels.
        weights: (N, K) keypoint weights (GT visibility, 0/1).
        areas: (N,) instance areas in pixels^2.
        sigmas: (K,) OKS sigmas of the dataset.

    Returns:
        (N,) loss.
    """
    dist = torch.norm(pred_kpts - target_kpts, dim=-1)
    dist = dist / areas.pow(0.5).clip(min=eps).unsqueeze(-1)
    dist = dist / (sigmas.to(dist).reshape(1, -1) * 2)
    oks = (torch.exp(-dist.pow(2) / 2) * (weights / weights.size(-1))).sum(dim=-1)
    return 1 - oks


def visibility_bce(vis_logits, vis_target, vis_weight):
    """Mean weighted BCE of the keypoint visibility logits (mmpose ``BCELoss``, mean).

    Args:
        vis_logits: (N, K) logits; vis_target: (N, K) in {0, 1}; vis_weight: (N, K).

    Returns:
        () mean over all N*K entries (weights multiply, they do not renormalise).
    """
    bce = F.binary_cross_entropy_with_logits(vis_logits, vis_target, reduction='none')
    return (bce * vis_weight).mean()


def laplace_target_heatmaps(kpt_targets, x_bins, y_bins, sigmas, areas):
    """Target 1-D heatmaps of the MLE loss (mmpose ``DCC.generate_target_heatmap``).

    A Laplace density around each GT coordinate, scaled by sqrt(area) (>= 1) and by the
    predicted per-keypoint sigma (>= 1e-3): ``exp(-|bin - gt| / (A * s) / 2) / s``.

    Args:
        kpt_targets: (N, K, 2) GT keypoints, pixels.
        x_bins: (N, Bx) and y_bins: (N, By) absolute bin positions, pixels.
        sigmas: (N, K) predicted sigmas (from ``dcc.sigma_fc``).
        areas: (N,) GT areas, pixels^2.

    Returns:
        (hm_x (N, K, Bx), hm_y (N, K, By)).
    """
    dist_x = torch.abs(kpt_targets[..., 0:1] - x_bins.unsqueeze(1))
    dist_y = torch.abs(kpt_targets[..., 1:2] - y_bins.unsqueeze(1))
    scale = areas.pow(0.5).clip(min=1).reshape(-1, 1, 1)
    sigmas = sigmas.clip(min=1e-3).unsqueeze(2)
    dist_x = dist_x / scale / sigmas
    dist_y = dist_y / scale / sigmas
    return torch.exp(-dist_x / 2) / sigmas, torch.exp(-dist_y / 2) / sigmas


def mle_cc_loss(prob_x, prob_y, hm_x, hm_y, vis_weight):
    """Per-instance MLE loss of coordinate classification (mmpose ``MLECCLoss``, mode log).

    The likelihood of the GT under the predicted 1-D distributions is the product over x and
    y of ``sum_b p[b] * hm[b]``; the loss is ``-log(likelihood + 1e-4)``, nan set to 0,
    weighted by visibility and averaged over K.

    Args:
        prob_x: (N, K, Bx), prob_y: (N, K, By) softmaxed predictions.
        hm_x, hm_y: target heatmaps of the same shapes.
        vis_weight: (N, K) GT visibility.

    Returns:
        (N,) loss.
    """
    prob = (prob_x * hm_x).sum(dim=-1) * (prob_y * hm_y).sum(dim=-1)
    loss = -torch.log(prob + 1e-4)
    loss = torch.where(torch.isnan(loss), torch.zeros_like(loss), loss)
    return (loss * vis_weight).mean(dim=1)


def box_aux_targets(gt_boxes, priors):
    """Raw-space box targets of the auxiliary L1 loss (mmpose ``YOLOXPoseHead._get_targets``).

    Args:
        gt_boxes: (N, 4) xyxy pixels; priors: (N, 4) as (x, y, stride_x, stride_y).

    Returns:
        (N, 4) ``((gt_cxcy - prior_xy) / stride, log(gt_wh / stride + 1e-8))``.
    """
    cxcy = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2.0
    wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
    return torch.cat([(cxcy - priors[:, :2]) / priors[:, 2:],
                      torch.log(wh / priors[:, 2:] + 1e-8)], dim=-1)


def l1_sum(pred, target):
    """Summed absolute error (mmpose ``L1Loss(reduction='sum')``)."""
    return F.l1_loss(pred, target, reduction='sum')
