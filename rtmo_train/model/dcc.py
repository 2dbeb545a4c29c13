"""Dynamic Coordinate Classifier (DCC) of RTMO, with its Gated Attention Unit (GAU).

For each detected instance the DCC turns a pose vector into K keypoint tokens, refines them
with a GAU, and scores them against sine-encoded *dynamic* bins laid over the instance's box
(expanded by 1.25): 192 bins along x, 256 along y. A softmax over the bins and an integral
over the absolute bin positions give the keypoints (mmpose 1.3.2 ``DCC``; spec section 1.6).

All coordinates are network-input pixels. Every method accepts any number of leading
(instance) dimensions, e.g. (N, ...) for one image or (B, N, ...) for a batch.
"""
from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from .layers import Scale, fold_bn

BBOX_PADDING = 1.25  # RTMOHead bbox_padding: the bins span the box scaled by 1.25
EPS = 1e-8           # softmax denominator guard (mmpose rtmo_head.py EPS)
BIN_ENCODER_GAIN = 0.01  # from-scratch init of the bin encoders, see DCC.init_bin_encoders
FINE_BINS = 16  # DCC.factored_bin_logits: bins a * 16 + b from 16 fine offsets b


class ScaleNorm(nn.Module):
    """x / max(||x|| * dim**-0.5, eps) * g, with a learnable scalar ``g``."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x):
        """(..., D) -> (..., D)."""
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class GAU(nn.Module):
    """Gated attention unit over the K keypoint tokens (mmpose ``GAUEncoder``, pos_enc 'add').

    out = x * res_scale + o(u * (relu(q k^T / sqrt(s))^2 v)) with u, v, z = split(SiLU(uv(LN x)))
    and q, k = z * gamma[0|1] + beta[0|1] + pos_enc.
    """

    def __init__(self, dim=128, expansion=2, s=128):
        super().__init__()
        self.e, self.s = dim * expansion, s
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.o = nn.Linear(self.e, dim, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.ln = ScaleNorm(dim)
        self.res_scale = Scale(1.0, (dim,))
        nn.init.xavier_uniform_(self.uv.weight)

    def forward(self, x, pos_enc):
        """(..., K, D) tokens and (K, s) positional encoding -> (..., K, D)."""
        uv = F.silu(self.uv(self.ln(x)))
        u, v, z = torch.split(uv, [self.e, self.e, self.s], dim=-1)
        q = z * self.gamma[0] + self.beta[0] + pos_enc
        k = z * self.gamma[1] + self.beta[1] + pos_enc
        kernel = F.relu(torch.matmul(q, k.transpose(-1, -2)) / self.s ** 0.5).square()
        return self.res_scale(x) + self.o(u * torch.matmul(kernel, v))


class SinePositionalEncoding1d(nn.Module):
    """[cos(p / dim_t), sin(p / dim_t)] with ``dim_t[i] = temperature ** (i / half)``."""

    def __init__(self, channels=128, temperature=300.0):
        super().__init__()
        half = channels // 2
        self.register_buffer('dim_t', temperature ** (torch.arange(half) / half))

    def angles(self, position):
        """(...,) positions -> (..., channels / 2) angles p / dim_t."""
        return position.unsqueeze(-1) / self.dim_t

    def forward(self, position):
        """(...,) positions -> (..., channels)."""
        freq = self.angles(position)
        return torch.cat((freq.cos(), freq.sin()), dim=-1)


class DCCOutput(NamedTuple):
    """1-D keypoint distributions over dynamic bins, all in network-input pixels.

    prob_x (..., K, 192) and prob_y (..., K, 256) sum to 1 over the last axis; bins_x
    (..., 192) and bins_y (..., 256) are the absolute bin positions.
    """

    prob_x: torch.Tensor
    prob_y: torch.Tensor
    bins_x: torch.Tensor
    bins_y: torch.Tensor

    def keypoints(self):
        """Integral decode: (..., K, 2) expected (x, y) per keypoint."""
        # elementwise, not a matrix product: TensorRT's fp16 graphs keep what follows the last
        # Conv/MatMul/Gemm in fp32, and the decoded pixels need it (0.5 px steps in fp16)
        x = (self.prob_x * self.bins_x.unsqueeze(-2)).sum(-1)
        y = (self.prob_y * self.bins_y.unsqueeze(-2)).sum(-1)
        return torch.stack((x, y), dim=-1)


def box_center_scale(boxes, padding=BBOX_PADDING):
    """(..., 4) xyxy -> centre (..., 2) and padded size (..., 2) (mmpose bbox_xyxy2cs)."""
    scale = (boxes[..., 2:] - boxes[..., :2]) * padding
    center = (boxes[..., 2:] + boxes[..., :2]) * 0.5
    return center, scale


def softmax_bins(logits):
    """mmpose's guarded softmax over the last axis (clamp to +-5e4, max-shift, +1e-8)."""
    logits = logits.clamp(min=-5e4, max=5e4)
    exp = (logits - logits.amax(dim=-1, keepdim=True).detach()).exp()
    return exp / (exp.sum(dim=-1, keepdim=True) + EPS)


class DCC(nn.Module):
    """Dynamic coordinate classifier; attribute names mirror ``head.dcc.*`` checkpoint keys."""

    def __init__(self, in_channels, num_keypoints, feat_channels=128, num_bins=(192, 256),
                 spe_channels=128):
        super().__init__()
        self.num_keypoints, self.feat_channels = num_keypoints, feat_channels
        self.spe = SinePositionalEncoding1d(spe_channels, temperature=300.0)
        self.gau = GAU(feat_channels, expansion=2, s=128)
        self.pos_enc = nn.Parameter(torch.randn(num_keypoints, 128))
        self.pose_to_kpts = nn.Sequential(
            nn.Linear(in_channels, feat_channels * num_keypoints),
            nn.BatchNorm1d(feat_channels * num_keypoints))
        self.x_fc = nn.Linear(spe_channels, feat_channels)
        self.y_fc = nn.Linear(spe_channels, feat_channels)
        # training only: per-keypoint Laplace scale for the MLE loss, in (0, 0.1 * learned)
        self.sigma_fc = nn.Sequential(nn.Linear(in_channels, num_keypoints), nn.Sigmoid(),
                                      Scale(0.1))
        self.register_buffer('y_bins', torch.linspace(-0.5, 0.5, num_bins[1]))
        self.register_buffer('x_bins', torch.linspace(-0.5, 0.5, num_bins[0]))
        self.init_bin_encoders()

    @torch.no_grad()
    def init_bin_encoders(self, gain=BIN_ENCODER_GAIN):
        """Start ``x_fc``/``y_fc`` small and smooth (not mmpose's init; checkpoints overwrite it).

        With torch's default init the bin logits have a spread of ~60, so the softmax starts
        one-hot on a random bin, and the gradient that would move it vanishes: from scratch
        the DCC then cannot fit even a handful of instances. Weights scaled by ``gain`` times
        the column's sine period relative to the longest one start the softmax near uniform
        and let low frequencies (broad bumps) form first, high ones (sharp peaks) later.
        """
        period = self.spe.dim_t / self.spe.dim_t[-1]
        for fc in (self.x_fc, self.y_fc):
            fc.weight.mul_(gain * torch.cat((period, period))[None, :])
            fc.bias.mul_(gain)

    def keypoint_tokens(self, pose_vecs):
        """(..., C) pose vectors -> (..., K, feat) GAU-refined keypoint tokens."""
        lead = pose_vecs.shape[:-1]
        # BatchNorm1d wants (N, C): flatten every leading dimension into one
        feats = self.pose_to_kpts(pose_vecs.reshape(-1, pose_vecs.shape[-1]))
        feats = feats.reshape(*lead, self.num_keypoints, self.feat_channels)
        return self.gau(feats, self.pos_enc)

    def forward(self, pose_vecs, boxes, priors, factored=False):
        """Score keypoints over the dynamic bins of each instance.

        Args:
            pose_vecs: (..., C) pose vectors (head ``pose_vec`` at the instance's prior).
            boxes: (..., 4) decoded xyxy boxes in network-input pixels, NOT clamped.
            priors: (..., 2) prior (grid point) positions in network-input pixels.
            factored: compute the bin logits with ``factored_bin_logits`` (inference: the
                same values up to float rounding, less work) instead of mmpose's form.

        Returns:
            ``DCCOutput`` with softmax probabilities and absolute bin positions; call
            ``.keypoints()`` for the (..., K, 2) integral decode.
        """
        center, scale = box_center_scale(boxes)
        rel = center - priors  # the bins are *encoded* relative to the prior ...
        tokens = self.keypoint_tokens(pose_vecs)
        bin_logits = self.factored_bin_logits if factored else self.bin_logits
        prob_x = softmax_bins(bin_logits(tokens, self.x_bins, scale[..., 0:1], rel[..., 0:1],
                                         self.x_fc))
        prob_y = softmax_bins(bin_logits(tokens, self.y_bins, scale[..., 1:2], rel[..., 1:2],
                                         self.y_fc))
        # ... but *decoded* at absolute positions (mmpose _decode_xy_heatmaps)
        bins_x = self.x_bins * scale[..., 0:1] + center[..., 0:1]
        bins_y = self.y_bins * scale[..., 1:2] + center[..., 1:2]
        return DCCOutput(prob_x, prob_y, bins_x, bins_y)

    def bin_logits(self, tokens, bins, scale, offset, fc):
        """mmpose's form: (..., K, F) tokens against fc(spe(bins * scale + offset)), the
        (..., n, F) encodings of the n bins at (..., 1) scale and offset -> (..., K, n)."""
        encodings = fc(self.spe(bins * scale + offset))
        return torch.matmul(tokens, encodings.transpose(-1, -2))

    def factored_bin_logits(self, tokens, bins, scale, offset, fc):
        """``bin_logits`` by two exact rewrites that skip the (..., n, F) encodings.

        ``fc`` is linear, so the K = 17 tokens go through its weight instead of the n = 192
        or 256 encodings (tokens fc(e)^T = (tokens W) e^T + tokens b). The bins are evenly
        spaced, so the angle of bin a * 16 + b is that of coarse bin a * 16 plus that of
        fine offset b, and the angle-sum identities (cos(A + B) = cos A cos B - sin A sin B,
        sin(A + B) = sin A cos B + cos A sin B) give its sine and cosine from 12 (16) coarse
        and 16 fine ones: 28 (32) sines instead of 192 (256) per instance and channel.
        Equal to ``bin_logits`` up to float rounding.
        """
        n = bins.shape[0]
        if n % FINE_BINS:
            return self.bin_logits(tokens, bins, scale, offset, fc)
        coarse = self.spe.angles(bins.reshape(-1, FINE_BINS)[:, 0] * scale + offset)
        fine = self.spe.angles((bins[:FINE_BINS] - bins[0]) * scale)
        cos_a, sin_a = coarse.cos().unsqueeze(-2), coarse.sin().unsqueeze(-2)  # (.., A, 1, H)
        cos_b, sin_b = fine.cos().unsqueeze(-3), fine.sin().unsqueeze(-3)      # (.., 1, 16, H)
        cos = (cos_a * cos_b - sin_a * sin_b).flatten(-3, -2)  # (..., n, H)
        sin = (sin_a * cos_b + cos_a * sin_b).flatten(-3, -2)
        encodings = torch.cat((cos, sin), dim=-1)  # = self.spe(bins * scale + offset)
        logits = torch.matmul(torch.matmul(tokens, fc.weight), encodings.transpose(-1, -2))
        # the bias term as a (..., K, 1) column: a matrix product, as ONNX Runtime runs fastest
        return logits + torch.matmul(tokens, fc.bias.unsqueeze(-1))

    def predict(self, pose_vecs, boxes, priors):
        """Keypoints (..., K, 2) in network-input pixels; arguments as ``forward``, with the
        factored bin logits."""
        return self.forward(pose_vecs, boxes, priors, factored=True).keypoints()

    def sigmas(self, pose_vecs):
        """Training only: (..., C) -> (..., K) Laplace scales for the MLE-CC loss."""
        return self.sigma_fc(pose_vecs)

    @torch.no_grad()
    def fuse(self):
        """Fold the BatchNorm1d of ``pose_to_kpts`` into its Linear (inference only)."""
        if len(self.pose_to_kpts) == 1:
            return
        fc, bn = self.pose_to_kpts
        weight, bias = fold_bn(fc.weight, fc.bias, bn)
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
        self.pose_to_kpts = nn.Sequential(fc)
