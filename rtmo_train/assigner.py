"""SimOTA label assignment for RTMO, equal to mmpose 1.3.2's ``SimOTAAssigner``.

Source: mmpose ``models/task_modules/assigners/{sim_ota_assigner,metric_calculators}.py``
with the RTMO settings (``dynamic_k_indicator='oks'``, iou/oks cost weight 3, cls cost weight
1, vis cost weight 0, centre radius 2.5 strides, top-10 candidates for the dynamic k).

Everything here runs without gradients: assignment only chooses targets.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

INF = 100000.0   # cost added to candidates outside "box AND centre region" (mmpose INF)
EPS = 1.0e-7     # inside the -log() costs (mmpose EPS)


@torch.no_grad()
def pairwise_box_iou(boxes1, boxes2, eps=1e-6):
    """IoU matrix (mmpose ``bbox_overlaps``, not aligned): (M, 4), (G, 4) xyxy -> (M, G)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = torch.clamp(area1[:, None] + area2[None, :] - overlap, min=eps)
    return overlap / union


@torch.no_grad()
def pose_oks(pred_kpts, gt_kpts, gt_weights, areas, sigmas, eps=1e-8):
    """OKS with weights normalised by their sum (mmpose ``PoseOKS``); broadcasts.

    Args:
        pred_kpts: (..., K, 2) and gt_kpts: (..., K, 2) pixels, broadcastable.
        gt_weights: (..., K) keypoint weights (visibility).
        areas: (...,) areas in pixels^2, broadcastable against the leading dims.
        sigmas: (K,) OKS sigmas.

    Returns:
        (...) OKS in [0, 1]; 0 for an instance without any visible keypoint.
    """
    dist = torch.norm(pred_kpts - gt_kpts, dim=-1)
    dist = dist / areas.unsqueeze(-1).pow(0.5).clip(min=eps)
    dist = dist / (sigmas.to(dist) * 2)
    weights = gt_weights / gt_weights.sum(dim=-1, keepdim=True).clip(min=eps)
    return (torch.exp(-dist.pow(2) / 2) * weights).sum(dim=-1)


@dataclass
class AssignResult:
    """Output of :meth:`SimOTAAssigner.assign` for one image with P priors.

    ``gt_inds`` (P,) long: 0 = background, i + 1 = matched to GT i.
    ``max_overlaps`` (P,) float: OKS (the dynamic-k indicator) with the matched GT for
    positives; ``-INF`` elsewhere (0 everywhere when nothing could be assigned), as mmpose.
    """

    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor

    @property
    def pos_inds(self):
        """Indices of the positive priors, ascending."""
        return torch.nonzero(self.gt_inds > 0, as_tuple=False).squeeze(-1)


@dataclass
class SimOTAAssigner:
    """SimOTA with the OKS dynamic-k indicator (RTMO's configuration of mmpose's assigner).

    ``use_keypoints_for_center``: the centre region is centred on the mean of the visible GT
    keypoints instead of the box centre (True in mmpose's rtmo-s/t COCO and body7 configs).
    """

    sigmas: torch.Tensor
    center_radius: float = 2.5
    candidate_topk: int = 10
    iou_weight: float = 3.0
    cls_weight: float = 1.0
    oks_weight: float = 3.0
    use_keypoints_for_center: bool = False

    @torch.no_grad()
    def assign(self, priors, scores, boxes, kpts, gt_boxes, gt_kpts, gt_vis, gt_areas):
        """Match the P priors of one image to its G ground-truth instances.

        Args:
            priors: (P, 4) as (x, y, stride_x, stride_y), pixels.
            scores: (P,) predicted scores in [0, 1] (RTMO: sqrt(sigmoid(cls) * 1)).
            boxes: (P, 4) decoded predicted boxes, xyxy pixels.
            kpts: (P, K, 2) decoded predicted (regression-branch) keypoints, pixels.
            gt_boxes: (G, 4) xyxy; gt_kpts: (G, K, 2); gt_vis: (G, K); gt_areas: (G,).

        Returns:
            AssignResult.
        """
        num_priors, num_gt = priors.size(0), gt_boxes.size(0)
        gt_inds = priors.new_zeros((num_priors,), dtype=torch.long)
        max_overlaps = priors.new_zeros((num_priors,))
        if num_gt == 0 or num_priors == 0:
            return AssignResult(gt_inds, max_overlaps)
        valid, in_box_and_centre = self.candidates(priors, gt_boxes, gt_kpts, gt_vis)
        if not bool(valid.any()):
            return AssignResult(gt_inds, max_overlaps)

        ious = pairwise_box_iou(boxes[valid], gt_boxes)
        oks = pose_oks(kpts[valid].unsqueeze(1), gt_kpts.unsqueeze(0), gt_vis.unsqueeze(0),
                       gt_areas.unsqueeze(0), self.sigmas)
        cost = self.cost(in_box_and_centre, ious, oks, scores[valid])
        matched_oks, matched_gt, fg = self.dynamic_k_matching(cost, oks)

        valid_idx = torch.nonzero(valid, as_tuple=False).squeeze(-1)
        gt_inds[valid_idx[fg]] = matched_gt + 1
        max_overlaps.fill_(-INF)
        max_overlaps[valid_idx[fg]] = matched_oks.to(max_overlaps)
        return AssignResult(gt_inds, max_overlaps)

    def candidates(self, priors, gt_boxes, gt_kpts, gt_vis):
        """Which priors are candidates: strictly inside a GT box or its centre square.

        Returns:
            valid (P,) bool: inside some box OR some centre square.
            in_box_and_centre (V, G) bool for the V valid priors.
        """
        x, y = priors[:, 0:1], priors[:, 1:2]          # (P, 1)
        sx, sy = priors[:, 2:3], priors[:, 3:4]
        deltas = torch.stack([x - gt_boxes[:, 0], y - gt_boxes[:, 1],
                              gt_boxes[:, 2] - x, gt_boxes[:, 3] - y], dim=1)
        in_box = deltas.min(dim=1).values > 0           # (P, G)

        cx = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2.0
        cy = (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2.0
        if self.use_keypoints_for_center:
            # mean of the visible GT keypoints; GTs without one keep the box centre
            num_vis = gt_vis.sum(dim=-1, keepdim=True)
            kpt_centre = ((gt_kpts * gt_vis.unsqueeze(-1)).sum(dim=-2) / num_vis).to(gt_boxes)
            has_vis = num_vis.squeeze(-1) > 0
            cx = torch.where(has_vis, kpt_centre[:, 0], cx)
            cy = torch.where(has_vis, kpt_centre[:, 1], cy)
        r = self.center_radius
        ct_deltas = torch.stack([x - (cx - r * sx), y - (cy - r * sy),
                                 (cx + r * sx) - x, (cy + r * sy) - y], dim=1)
        in_centre = ct_deltas.min(dim=1).values > 0     # (P, G)

        valid = in_box.any(dim=1) | in_centre.any(dim=1)
        return valid, in_box[valid] & in_centre[valid]

    def cost(self, in_box_and_centre, ious, oks, scores):
        """SimOTA cost (V, G): 3*-log(IoU) + 3*-log(OKS) + BCE(score, 1) + INF outside."""
        cost = (~in_box_and_centre) * INF
        cost = cost + (-torch.log(ious + EPS)) * self.iou_weight
        cost = cost + (-torch.log(oks + EPS)) * self.oks_weight
        # single class: one-hot target is 1, so BCE = -log(score) with torch's log clamp
        scores = scores.reshape(-1, 1).float().expand_as(ious)
        cls_cost = F.binary_cross_entropy(scores, torch.ones_like(scores), reduction='none')
        return cost + cls_cost.to(ious) * self.cls_weight

    def dynamic_k_matching(self, cost, overlaps):
        """Pick the k lowest-cost priors per GT, k = max(1, int(sum of its top-10 overlaps)).

        A prior picked by several GTs keeps only its lowest-cost GT (first one on ties).

        Args:
            cost, overlaps: (V, G).

        Returns:
            (matched overlaps (F,), matched GT index (F,), foreground mask (V,)).
        """
        matching = torch.zeros_like(cost, dtype=torch.uint8)
        topk = min(self.candidate_topk, overlaps.size(0))
        top_overlaps, _ = torch.topk(overlaps, topk, dim=0)
        dynamic_ks = torch.clamp(top_overlaps.sum(0).int(), min=1)
        for g in range(cost.size(1)):
            _, idx = torch.topk(cost[:, g], k=int(dynamic_ks[g]), largest=False)
            matching[idx, g] = 1
        multi = matching.sum(1) > 1
        if bool(multi.any()):
            argmin = torch.min(cost[multi, :], dim=1).indices
            matching[multi, :] = 0
            matching[torch.nonzero(multi, as_tuple=False).squeeze(-1), argmin] = 1
        fg = matching.sum(1) > 0
        matched_gt = matching[fg, :].argmax(1)
        matched_overlaps = (matching * overlaps).sum(1)[fg]
        return matched_overlaps, matched_gt, fg
