"""HybridEncoder neck (RT-DETR style) with the ChannelMapper projector, as in mmpose 1.3.2.

Input: the three backbone maps (strides 8, 16, 32). A one-layer post-norm transformer runs on
the stride-32 map, then a top-down FPN and a bottom-up PAN of CSPRepLayers; the stride-16 and
stride-32 PAN outputs are projected to ``cfg.head_channels`` (1x1 conv + BN, no activation).
"""
import torch
from torch import nn
import torch.nn.functional as F

from ..config import NECK_DIM
from .layers import TORCH_BN, ConvBNAct, RepVGGBlock


class SinePositionalEncoding2d(nn.Module):
    """Fixed 2-D sine encoding; ``dim_t[i] = temperature ** (i / 64)`` (checkpoint buffer)."""

    def __init__(self, channels=NECK_DIM // 2, temperature=10000.0):
        super().__init__()
        half = channels // 2
        self.register_buffer('dim_t', temperature ** (torch.arange(half) / half))

    def forward(self, h, w):
        """Return (1, h*w, 2*channels): [cos r, sin r, cos c, sin c] per cell, row-major.

        Positions are raw integer row/column indices (no normalisation), as in mmpose.
        """
        dim_t = self.dim_t
        rows = torch.arange(h, dtype=dim_t.dtype, device=dim_t.device)
        cols = torch.arange(w, dtype=dim_t.dtype, device=dim_t.device)
        fr = rows[:, None] / dim_t  # (h, half)
        fc = cols[:, None] / dim_t  # (w, half)
        enc_r = torch.cat((fr.cos(), fr.sin()), dim=-1)[:, None, :].expand(h, w, -1)
        enc_c = torch.cat((fc.cos(), fc.sin()), dim=-1)[None, :, :].expand(h, w, -1)
        return torch.cat((enc_r, enc_c), dim=-1).reshape(1, h * w, -1)


class SelfAttention(nn.Module):
    """Residual multi-head self-attention with positional encoding on query and key."""

    def __init__(self, dim=NECK_DIM, heads=8):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x, pos):
        """(B, N, C) tokens and (1, N, C) encoding -> (B, N, C)."""
        qk = x + pos
        return x + self.attn(qk, qk, x, need_weights=False)[0]


class FeedForward(nn.Module):
    """Residual Linear -> GELU (exact erf) -> Linear, mmcv ``FFN`` layout.

    ``hidden`` defaults to 4 * dim (mmpose: 1024 for the 256-wide neck).
    """

    def __init__(self, dim=NECK_DIM, hidden=None):
        super().__init__()
        hidden = 4 * dim if hidden is None else hidden
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU()),
                                    nn.Linear(hidden, dim))

    def forward(self, x):
        """(B, N, C) -> (B, N, C)."""
        return x + self.layers(x)


class EncoderLayer(nn.Module):
    """Post-norm DETR encoder layer: x = LN(x + MHA); x = LN(x + FFN)."""

    def __init__(self, dim=NECK_DIM):
        super().__init__()
        self.self_attn = SelfAttention(dim)
        self.ffn = FeedForward(dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])

    def forward(self, x, pos):
        """(B, N, C) tokens and (1, N, C) encoding -> (B, N, C)."""
        x = self.norms[0](self.self_attn(x, pos))
        return self.norms[1](self.ffn(x))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers (RTMO uses one)."""

    def __init__(self, num_layers=1, dim=NECK_DIM):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim) for _ in range(num_layers))

    def forward(self, x, pos):
        """(B, N, C) tokens and (1, N, C) encoding -> (B, N, C)."""
        for layer in self.layers:
            x = layer(x, pos)
        return x


class CSPRepLayer(nn.Module):
    """conv3(RepVGG blocks(conv1(x)) + conv2(x)); conv3 is Identity when hidden == out."""

    def __init__(self, in_channels, out_channels, num_blocks, hidden):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, hidden, 1, bn=TORCH_BN)
        self.conv2 = ConvBNAct(in_channels, hidden, 1, bn=TORCH_BN)
        self.bottlenecks = nn.Sequential(*[RepVGGBlock(hidden) for _ in range(num_blocks)])
        self.conv3 = (nn.Identity() if hidden == out_channels
                      else ConvBNAct(hidden, out_channels, 1, bn=TORCH_BN))

    def forward(self, x):
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        return self.merge(self.conv1(x), self.conv2(x))

    def merge(self, x1, x2):
        """The layer after its two input convs: conv3(RepVGG blocks(x1) + x2)."""
        return self.conv3(self.bottlenecks(x1) + x2)


class FusedFPNConv(nn.Module):
    """conv1 or conv2 of an FPN CSPRepLayer on cat(upsample(lateral), input_proj(x)), without
    the concatenation (inference only; made by ``HybridEncoder.fuse``).

    The conv is 1x1, so it splits into a lateral half and an input half. The lateral half
    commutes with the nearest 2x upsampling, so it runs before it, on a quarter of the pixels;
    the input half absorbs ``input_proj`` (1x1 conv + BN, no activation: linear). Equal to the
    conv up to float rounding; ~7 % of a CPU run of RTMO-s saved (README, "Benchmark"). conv1
    and conv2 stay separate: one conv with both outputs then a split measured slower in ONNX
    Runtime (the split leaves its blocked layout).
    """

    def __init__(self, conv, proj):
        super().__init__()
        conv.fuse()  # BatchNorm folded first
        proj.fuse()
        weight, bias = conv.conv.weight.double(), conv.conv.bias.double()
        lateral_channels = proj.conv.out_channels
        w_side = weight[:, lateral_channels:, 0, 0]
        w_proj, b_proj = proj.conv.weight.double()[:, :, 0, 0], proj.conv.bias.double()
        self.top = nn.Conv2d(lateral_channels, weight.shape[0], 1, bias=False)
        self.side = nn.Conv2d(w_proj.shape[1], weight.shape[0], 1)
        dtype = conv.conv.weight.dtype
        self.top.weight.copy_(weight[:, :lateral_channels].to(dtype))
        self.side.weight.copy_((w_side @ w_proj)[:, :, None, None].to(dtype))
        self.side.bias.copy_((w_side @ b_proj + bias).to(dtype))
        self.to(conv.conv.weight.device)
        self.act = conv.act

    def forward(self, lateral, x):
        """Lateral (B, C, H/2, W/2) and backbone (B, C_in, H, W) maps -> (B, C_out, H, W)."""
        return self.act(F.interpolate(self.top(lateral), scale_factor=2.0) + self.side(x))


class ChannelMapper(nn.Module):
    """Per-level 1x1 conv + BN (no activation) to the head width."""

    def __init__(self, in_channels, out_channels, num_levels=2):
        super().__init__()
        self.convs = nn.ModuleList(
            ConvBNAct(in_channels, out_channels, 1, bn=TORCH_BN, act=False)
            for _ in range(num_levels))

    def forward(self, feats):
        """List of (B, C_in, H_l, W_l) -> list of (B, C_out, H_l, W_l)."""
        return [conv(x) for conv, x in zip(self.convs, feats)]


class HybridEncoder(nn.Module):
    """Input projection, transformer on P5, FPN + PAN, and the ChannelMapper projector."""

    def __init__(self, cfg):
        super().__init__()
        dim = cfg.neck_channels
        self.input_proj = nn.ModuleList(
            ConvBNAct(c, dim, 1, bn=TORCH_BN, act=False) for c in cfg.stage_channels[1:])
        self.encoder = nn.ModuleList([TransformerEncoder(1, dim)])
        self.sincos_pos_enc = SinePositionalEncoding2d(dim // 2)

        def rep_layer():
            return CSPRepLayer(2 * dim, dim, cfg.rep_blocks, cfg.rep_hidden)

        self.lateral_convs = nn.ModuleList(ConvBNAct(dim, dim, 1, bn=TORCH_BN) for _ in range(2))
        self.fpn_blocks = nn.ModuleList(rep_layer() for _ in range(2))
        self.downsample_convs = nn.ModuleList(
            ConvBNAct(dim, dim, 3, stride=2, bn=TORCH_BN) for _ in range(2))
        self.pan_blocks = nn.ModuleList(rep_layer() for _ in range(2))
        self.projector = ChannelMapper(dim, cfg.head_channels)
        self.fpn_inputs = None  # fuse(): FusedFPNConv pairs, one per FPN block

    def encode_p5(self, p5):
        """Run the transformer on the (B, neck_channels, h, w) stride-32 map; same shape out."""
        b, c, h, w = p5.shape
        tokens = p5.flatten(2).permute(0, 2, 1)
        tokens = self.encoder[0](tokens, self.sincos_pos_enc(h, w))
        return tokens.permute(0, 2, 1).reshape(b, c, h, w)

    def forward(self, feats):
        """[C3, C4, C5] backbone maps -> [N4, N5]: (B, C_head, H/16, W/16), (.., H/32, W/32)."""
        c3, c4, c5 = feats
        p5 = self.encode_p5(self.input_proj[2](c5))
        # top-down: lateral outputs L5, L4 are reused by the bottom-up path
        l5 = self.lateral_convs[0](p5)
        f4 = self.fpn(0, l5, c4)
        l4 = self.lateral_convs[1](f4)
        f3 = self.fpn(1, l4, c3)
        # bottom-up; mmpose keeps only the stride-16 and stride-32 outputs (output_indices)
        n4 = self.pan_blocks[0](torch.cat((self.downsample_convs[0](f3), l4), 1))
        n5 = self.pan_blocks[1](torch.cat((self.downsample_convs[1](n4), l5), 1))
        return self.projector([n4, n5])

    def fpn(self, i, lateral, feat):
        """FPN block ``i`` on [2x upsampled ``lateral``, input_proj of backbone map ``feat``]."""
        block = self.fpn_blocks[i]
        if self.fpn_inputs is not None:
            return block.merge(*(conv(lateral, feat) for conv in self.fpn_inputs[i]))
        proj = self.input_proj[1 - i]  # block 0 takes C4, block 1 takes C3
        return block(torch.cat((F.interpolate(lateral, scale_factor=2.0), proj(feat)), 1))

    @torch.no_grad()
    def fuse(self):
        """Inference only: each FPN block's conv1 and conv2 as a ``FusedFPNConv``; the
        input_proj of C3 and C4 is folded into them and no longer runs."""
        if self.fpn_inputs is None:
            self.fpn_inputs = nn.ModuleList(
                nn.ModuleList(FusedFPNConv(conv, self.input_proj[1 - i])
                              for conv in (block.conv1, block.conv2))
                for i, block in enumerate(self.fpn_blocks))
