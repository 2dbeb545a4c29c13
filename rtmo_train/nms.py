"""Greedy single-class NMS, numerically as mmpose's ``nms_torch`` + ``bbox_overlaps``."""
import numpy as np
import torch


def box_iou(a, b, eps=1e-6):
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M).

    No +1 pixel convention; the union is clamped to >= ``eps`` (mmpose ``bbox_overlaps``).
    """
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area_a[:, None] + area_b[None, :] - overlap).clamp(min=eps)
    return overlap / union


def nms(boxes, scores, iou_thr):
    """Return the indices of the kept boxes, by descending score.

    A box is suppressed when its IoU with an already kept (higher-scoring) box is strictly
    greater than ``iou_thr``; there is no cap on the number kept.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        iou_thr: IoU threshold in [0, 1].

    Returns:
        (n,) int64 tensor of indices into ``boxes``.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    suppress = (box_iou(boxes[order], boxes[order]) > iou_thr).cpu().numpy()
    keep = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~suppress[i, i + 1:]
    return order[torch.from_numpy(keep).to(order.device)]
