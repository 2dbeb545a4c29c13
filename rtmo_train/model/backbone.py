"""CSPDarknet backbone (YOLOX "P5" arch) as mmpose 1.3.2 builds it for RTMO.

Input: (B, 3, H, W) float, BGR 0..255. Output: the stage2, stage3 and stage4 feature maps at
strides 8, 16 and 32 with ``cfg.stage_channels[1:]`` channels.
"""
import torch
from torch import nn

from .layers import ConvBNAct


class Focus(nn.Module):
    """Space-to-depth (12 channels) then a 3x3 conv; halves H and W.

    ``fuse()`` folds the space-to-depth into the conv: a 6x6 conv of stride 2 and padding 2
    on the image reads exactly the pixels the 3x3 conv reads through the four phases (YOLOv5
    made the same change); it saves the 12-channel copy of the image, ~1 % of a CPU run.
    """

    # the phase (row, column) of each group of 3 channels after space-to-depth
    PHASES = ((0, 0), (1, 0), (0, 1), (1, 1))

    def __init__(self, out_channels):
        super().__init__()
        self.conv = ConvBNAct(12, out_channels, 3)
        self.space_to_depth = True

    def forward(self, x):
        """(B, 3, H, W) -> (B, C, H/2, W/2)."""
        if self.space_to_depth:
            # order TL, BL, TR, BR as in mmpose/YOLOX (rows vary before columns)
            x = torch.cat([x[..., r::2, c::2] for r, c in self.PHASES], dim=1)
        return self.conv(x)

    @torch.no_grad()
    def fuse(self):
        """Fold BatchNorm, then the space-to-depth, into one 6x6 stride-2 conv (inference)."""
        if not self.space_to_depth:
            return
        self.conv.fuse()
        conv3 = self.conv.conv
        conv6 = nn.Conv2d(3, conv3.out_channels, 6, stride=2, padding=2)
        conv6.weight.zero_()
        for group, (r, c) in enumerate(self.PHASES):
            # tap (dy, dx) of phase (r, c) reads image pixel (2 (y + dy) + r, 2 (x + dx) + c)
            conv6.weight[:, :, r::2, c::2] = conv3.weight[:, 3 * group:3 * group + 3]
        conv6.bias.copy_(conv3.bias)
        self.conv.conv = conv6.to(conv3.weight)
        self.space_to_depth = False


class DarknetBottleneck(nn.Module):
    """1x1 conv -> 3x3 conv, with an optional residual (expansion 1.0)."""

    def __init__(self, channels, add_identity):
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 1)
        self.conv2 = ConvBNAct(channels, channels, 3)
        self.add_identity = add_identity

    def forward(self, x):
        """(B, C, H, W) -> (B, C, H, W)."""
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage-partial layer: two 1x1 halves, bottlenecks on one, concat, 1x1."""

    def __init__(self, channels, num_blocks, add_identity):
        super().__init__()
        mid = channels // 2
        self.main_conv = ConvBNAct(channels, mid, 1)
        self.short_conv = ConvBNAct(channels, mid, 1)
        self.final_conv = ConvBNAct(2 * mid, channels, 1)
        self.blocks = nn.Sequential(
            *[DarknetBottleneck(mid, add_identity) for _ in range(num_blocks)])

    def forward(self, x):
        """(B, C, H, W) -> (B, C, H, W)."""
        main = self.blocks(self.main_conv(x))
        return self.final_conv(torch.cat((main, self.short_conv(x)), dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: 1x1 down to C/2, max-pools 5/9/13 (stride 1), 1x1 back."""

    def __init__(self, channels, kernel_sizes=(5, 9, 13)):
        super().__init__()
        mid = channels // 2
        self.conv1 = ConvBNAct(channels, mid, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(mid * (len(kernel_sizes) + 1), channels, 1)

    def forward(self, x):
        """(B, C, H, W) -> (B, C, H, W)."""
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.pools], dim=1))


class CSPDarknet(nn.Module):
    """Stem + four stages; returns the outputs of stages 2, 3 and 4."""

    def __init__(self, cfg):
        super().__init__()
        self.stem = Focus(cfg.stem_channels)
        in_ch = cfg.stem_channels
        for i, (out_ch, blocks) in enumerate(zip(cfg.stage_channels, cfg.stage_blocks)):
            last = i == 3  # stage4: SPP before the CSP layer, and no residuals
            layers = [ConvBNAct(in_ch, out_ch, 3, stride=2)]
            if last:
                layers.append(SPPBottleneck(out_ch))
            layers.append(CSPLayer(out_ch, blocks, add_identity=not last))
            self.add_module(f'stage{i + 1}', nn.Sequential(*layers))
            in_ch = out_ch

    def forward(self, x):
        """(B, 3, H, W) -> [(B, C2, H/8, W/8), (B, C3, H/16, W/16), (B, C4, H/32, W/32)]."""
        x = self.stage2(self.stage1(self.stem(x)))
        c3 = self.stage3(x)
        return [x, c3, self.stage4(c3)]
