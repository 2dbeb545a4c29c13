"""RTMO head: per-level conv branches, priors, box decoding and the inference post-process.

Levels are strides 16 and 32 (in that order everywhere). Flattened per-prior tensors are
ordered level by level, row-major within a level, which is also the order of ``priors()``.
"""
from typing import List, NamedTuple, Optional

import torch
from torch import nn

from ..nms import nms
from .dcc import DCC
from .layers import ConvBNAct

STRIDES = (16, 32)
CLS_PRIOR_PROB = 0.01  # initial foreground probability of the classifier bias (YOLOX)


class HeadOutput(NamedTuple):
    """Raw per-level head outputs, each a list over ``STRIDES`` of (B, C, H_l, W_l).

    cls (C=1) and kpt_vis (C=K) are logits; bbox (C=4) is (dx, dy, log w, log h) in stride
    units; pose_vec (C=Cv) feeds the DCC; kpt_offsets (C=2K, (dx, dy) per keypoint in stride
    units) is computed only in training mode and is None in eval mode.
    """

    cls: List[torch.Tensor]
    bbox: List[torch.Tensor]
    kpt_vis: List[torch.Tensor]
    pose_vec: List[torch.Tensor]
    kpt_offsets: Optional[List[torch.Tensor]]


class FlatOutput(NamedTuple):
    """Per-prior predictions for a batch, N = sum over levels of H_l * W_l.

    scores (B, N) = sigmoid(cls); boxes (B, N, 4) decoded xyxy network-input pixels
    (unclamped); kpt_scores (B, N, K) = sigmoid(kpt_vis); pose_vecs (B, N, Cv);
    priors (N, 2) pixels; strides (N,).
    """

    scores: torch.Tensor
    boxes: torch.Tensor
    kpt_scores: torch.Tensor
    pose_vecs: torch.Tensor
    priors: torch.Tensor
    strides: torch.Tensor


class RTMOHeadModule(nn.Module):
    """Classification and pose conv branches; the first half of the channels goes to cls."""

    def __init__(self, cfg):
        super().__init__()
        half, cls_ch, pose_ch, k = (cfg.head_channels // 2, cfg.cls_channels,
                                    cfg.pose_channels, cfg.num_keypoints)
        levels = range(len(STRIDES))
        self.conv_cls = nn.ModuleList(
            nn.Sequential(ConvBNAct(half, cls_ch, 3), ConvBNAct(cls_ch, cls_ch, 3))
            for _ in levels)
        self.out_cls = nn.ModuleList(nn.Conv2d(cls_ch, 1, 1) for _ in levels)
        # pose branch: one dense 3x3 conv then three 3x3 convs in 8 groups
        self.conv_pose = nn.ModuleList(
            nn.Sequential(ConvBNAct(half, pose_ch, 3),
                          *[ConvBNAct(pose_ch, pose_ch, 3, groups=8) for _ in range(3)])
            for _ in levels)
        self.out_bbox = nn.ModuleList(nn.Conv2d(pose_ch, 4, 1) for _ in levels)
        self.out_kpt_reg = nn.ModuleList(nn.Conv2d(pose_ch, 2 * k, 1) for _ in levels)
        self.out_kpt_vis = nn.ModuleList(nn.Conv2d(pose_ch, k, 1) for _ in levels)
        self.out_pose = nn.ModuleList(
            nn.Conv2d(pose_ch, cfg.pose_vec_channels, 1) for _ in levels)
        bias = -torch.log(torch.tensor((1 - CLS_PRIOR_PROB) / CLS_PRIOR_PROB))
        for conv in self.out_cls:
            nn.init.constant_(conv.bias, bias.item())

    def forward(self, feats):
        """[(B, C_head, H_l, W_l)] per level -> ``HeadOutput``."""
        out = HeadOutput([], [], [], [], [] if self.training else None)
        for i, x in enumerate(feats):
            cls_feat, pose_feat = x.split(x.shape[1] // 2, dim=1)
            cls_feat = self.conv_cls[i](cls_feat)
            pose_feat = self.conv_pose[i](pose_feat)
            out.cls.append(self.out_cls[i](cls_feat))
            out.bbox.append(self.out_bbox[i](pose_feat))
            out.kpt_vis.append(self.out_kpt_vis[i](pose_feat))
            out.pose_vec.append(self.out_pose[i](pose_feat))
            if self.training:  # proxy keypoints, used only by the training assigner/losses
                out.kpt_offsets.append(self.out_kpt_reg[i](pose_feat))
        return out


class KeypointSigmas(nn.Module):
    """Holds the dataset's per-keypoint OKS sigmas (checkpoint key ``head.loss_oks.sigmas``).

    Not used at inference; kept so that mmpose checkpoints load without a key map and so
    that training can read the sigmas the checkpoint was trained with.
    """

    def __init__(self, num_keypoints):
        super().__init__()
        self.register_buffer('sigmas', torch.zeros(num_keypoints))


def flatten_levels(levels):
    """List of (B, C, H_l, W_l) -> (B, sum H_l W_l, C), level by level, row-major."""
    return torch.cat([x.permute(0, 2, 3, 1).flatten(1, 2) for x in levels], dim=1)


def decode_boxes(raw, priors, strides):
    """(B, N, 4) (dx, dy, log w, log h) -> (B, N, 4) xyxy pixels: centre = d*s + prior."""
    s = strides[:, None]
    xy = raw[..., :2] * s + priors
    wh = raw[..., 2:].exp() * s
    return torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)


def decode_kpt_offsets(raw, priors, strides):
    """Training: (B, N, 2K) regression offsets -> (B, N, K, 2) pixels (offset*s + prior)."""
    kpts = raw.reshape(*raw.shape[:-1], -1, 2)
    return kpts * strides[:, None, None] + priors[:, None, :]


def grid_priors(featmap_sizes, device=None, dtype=torch.float32):
    """Prior points for maps of (h, w) ``featmap_sizes`` at ``STRIDES``.

    Returns (N, 2) (x, y) pixels and (N,) strides. A prior sits at ``s * j + (s - 1) / 2``
    (mmpose MlvlPointGenerator with centralize_points=True), not at ``s * j``.
    """
    points, strides = [], []
    for (h, w), s in zip(featmap_sizes, STRIDES):
        ys = torch.arange(h, device=device, dtype=dtype) * s + (s - 1) / 2.0
        xs = torch.arange(w, device=device, dtype=dtype) * s + (s - 1) / 2.0
        grid = torch.stack((xs[None, :].expand(h, w), ys[:, None].expand(h, w)), dim=-1)
        points.append(grid.reshape(-1, 2))
        strides.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(strides)


class RTMOHead(nn.Module):
    """Head module + DCC; attribute names mirror ``head.*`` checkpoint keys."""

    def __init__(self, cfg):
        super().__init__()
        self.num_keypoints = cfg.num_keypoints
        self.head_module = RTMOHeadModule(cfg)
        self.dcc = DCC(cfg.pose_vec_channels, cfg.num_keypoints)
        self.loss_oks = KeypointSigmas(cfg.num_keypoints)

    def forward(self, feats):
        """Neck maps -> ``HeadOutput`` (raw per-level outputs)."""
        return self.head_module(feats)

    @staticmethod
    def priors(out, device=None, dtype=None):
        """Prior points of a ``HeadOutput``: (N, 2) pixels and (N,) strides.

        Device and dtype default to those of ``out``; see ``grid_priors``.
        """
        sizes = [tuple(x.shape[-2:]) for x in out.cls]
        return grid_priors(sizes, device or out.cls[0].device, dtype or out.cls[0].dtype)

    def flatten(self, out, priors=None):
        """``HeadOutput`` -> ``FlatOutput`` (sigmoid scores, decoded boxes, priors).

        ``priors``: optional precomputed ``(points, strides)`` of ``grid_priors`` (the ONNX
        export passes them as constants); by default they follow the map sizes of ``out``.
        """
        priors, strides = self.priors(out) if priors is None else priors
        return FlatOutput(
            scores=flatten_levels(out.cls)[..., 0].sigmoid(),
            boxes=decode_boxes(flatten_levels(out.bbox), priors, strides),
            kpt_scores=flatten_levels(out.kpt_vis).sigmoid(),
            pose_vecs=flatten_levels(out.pose_vec),
            priors=priors, strides=strides)

    def predict(self, out, score_thr=0.1, nms_thr=0.65, max_detections=None):
        """mmpose's test-time post-process for each image of a ``HeadOutput``.

        Keeps priors with score > ``score_thr`` (strict), greedy NMS suppressing IoU >
        ``nms_thr``, optionally the best ``max_detections``, then runs the DCC on the
        unclamped boxes. Returns one dict per image of tensors in network-input pixels:
        boxes (n, 4) xyxy unclamped, scores (n,) descending, keypoints (n, K, 2),
        keypoint_scores (n, K).
        """
        flat = self.flatten(out)
        results = []
        for b in range(flat.scores.shape[0]):
            idx = torch.nonzero(flat.scores[b] > score_thr)[:, 0]
            idx = idx[nms(flat.boxes[b, idx], flat.scores[b, idx], nms_thr)]
            if max_detections is not None:
                idx = idx[:max_detections]
            boxes = flat.boxes[b, idx]
            results.append(dict(
                boxes=boxes, scores=flat.scores[b, idx],
                keypoints=self.dcc.predict(flat.pose_vecs[b, idx], boxes, flat.priors[idx]),
                keypoint_scores=flat.kpt_scores[b, idx]))
        return results
