"""Basic building blocks shared by backbone, neck and head.

Attribute names follow mmcv's ``ConvModule`` (``conv``, ``bn``) so that mmpose checkpoint keys
load as they are. ``fuse()`` methods fold BatchNorm into the preceding layer in place (they
rewrite parameters, never methods); the forward code is the same before and after.
"""
import torch
from torch import nn

# BatchNorm settings: mmpose's CSPDarknet backbone and RTMO head use YOLOX's (eps 1e-3,
# momentum 0.03); the HybridEncoder neck and ChannelMapper keep torch defaults.
YOLOX_BN = dict(eps=1e-3, momentum=0.03)
TORCH_BN = dict(eps=1e-5, momentum=0.1)


def fold_bn(weight, bias, bn):
    """Return (weight, bias) of a layer followed by eval-mode ``bn``, folded into one.

    ``weight`` has the output channels first (conv or linear); ``bias`` may be None.
    """
    std = (bn.running_var + bn.eps).sqrt()
    factor = bn.weight / std
    if bias is None:
        bias = torch.zeros_like(bn.running_mean)
    new_weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
    new_bias = bn.bias + (bias - bn.running_mean) * factor
    return new_weight, new_bias


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> optional SiLU, mmcv ``ConvModule`` layout.

    Padding is ``kernel_size // 2`` ('same' for odd kernels at stride 1).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1,
                 bn=YOLOX_BN, act=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, **bn)
        # Swish (mmcv) and SiLU are the same function: x * sigmoid(x)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self):
        """Fold the BatchNorm into the conv (bias added, ``bn`` becomes Identity)."""
        if isinstance(self.bn, nn.Identity):
            return
        weight, bias = fold_bn(self.conv.weight, self.conv.bias, self.bn)
        self.conv.weight.copy_(weight)
        self.conv.bias = nn.Parameter(bias)
        self.bn = nn.Identity()


class RepVGGBlock(nn.Module):
    """SiLU(BN(conv3x3(x)) + BN(conv1x1(x))) (mmpose ``RepVGGBlock``, no identity branch).

    ``fuse()`` merges both branches into ``branch_3x3`` and drops ``branch_1x1``.
    """

    def __init__(self, channels):
        super().__init__()
        self.branch_3x3 = ConvBNAct(channels, channels, 3, bn=TORCH_BN, act=False)
        self.branch_1x1 = ConvBNAct(channels, channels, 1, bn=TORCH_BN, act=False)
        self.act = nn.SiLU()

    def forward(self, x):
        """(B, C, H, W) -> (B, C, H, W)."""
        out = self.branch_3x3(x)
        if self.branch_1x1 is not None:
            out = out + self.branch_1x1(x)
        return self.act(out)

    @torch.no_grad()
    def fuse(self):
        """Fold both BatchNorms and add the 1x1 kernel into the 3x3 centre."""
        if self.branch_1x1 is None:
            return
        self.branch_3x3.fuse()
        self.branch_1x1.fuse()
        conv3, conv1 = self.branch_3x3.conv, self.branch_1x1.conv
        conv3.weight[:, :, 1:2, 1:2] += conv1.weight
        conv3.bias += conv1.bias
        self.branch_1x1 = None


class Scale(nn.Module):
    """Multiply by a learnable parameter ``scale`` (a scalar or a per-channel vector)."""

    def __init__(self, init_value, shape=()):
        super().__init__()
        self.scale = nn.Parameter(torch.full(shape, float(init_value)))

    def forward(self, x):
        """Elementwise ``x * scale`` (broadcast over the last dimension)."""
        return x * self.scale
