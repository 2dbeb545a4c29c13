"""Typed model configuration for RTMO and the four official presets (t, s, m, l).

A variant is fixed by two multipliers, as in YOLOX: ``deepen`` scales block counts and
``widen`` scales channel counts. Every other size below is derived from them once, in
``__post_init__``, with the exact rounding mmpose 1.3.2 uses (see the spec, section 1.1).
"""
from dataclasses import dataclass, field, fields, replace
from typing import Tuple

# CSPDarknet "P5" arch: (out channels, blocks) of stage1..4 before scaling (mmpose
# csp_darknet.py); the stem has 64 channels before scaling.
_STAGE_CHANNELS = (128, 256, 512, 1024)
_STAGE_BLOCKS = (3, 9, 9, 3)
_STEM_CHANNELS = 64
NECK_DIM = 256  # HybridEncoder hidden_dim / transformer width of every official variant


@dataclass(frozen=True)
class ModelConfig:
    """RTMO architecture. Only the first six fields are free; the rest are derived.

    ``input_size`` is (width, height) of the network input in pixels; both must be multiples
    of 32 (the coarsest stride). mmpose trains t at 416x416 and s/m/l at 640x640.
    ``neck_channels`` is the HybridEncoder width (transformer and FPN/PAN); every official
    checkpoint has 256 (``NECK_DIM``), smaller values make CPU-sized models (the neck holds
    most of the weights of a narrow variant). It must be a multiple of 8 (attention heads).
    """

    variant: str = 's'
    deepen: float = 0.33
    widen: float = 0.5
    input_size: Tuple[int, int] = (640, 640)
    num_keypoints: int = 17
    neck_channels: int = NECK_DIM

    stem_channels: int = field(init=False)
    stage_channels: Tuple[int, ...] = field(init=False)
    stage_blocks: Tuple[int, ...] = field(init=False)
    rep_blocks: int = field(init=False)       # RepVGG blocks per CSPRepLayer in the neck
    rep_hidden: int = field(init=False)       # CSPRepLayer hidden channels
    head_channels: int = field(init=False)    # ChannelMapper output = head input channels
    cls_channels: int = field(init=False)     # head classification branch width
    pose_channels: int = field(init=False)    # head pose branch width (8 groups)
    pose_vec_channels: int = field(init=False)  # DCC input width

    def __post_init__(self):
        """Check the free fields and compute the derived sizes."""
        w, h = (int(v) for v in self.input_size)
        if w <= 0 or h <= 0 or w % 32 or h % 32:
            raise ValueError(f'input_size must be two positive multiples of 32, got '
                             f'{self.input_size}')
        if self.num_keypoints < 1:
            raise ValueError(f'num_keypoints must be >= 1, got {self.num_keypoints}')
        if self.neck_channels < 8 or self.neck_channels % 8:
            raise ValueError(f'neck_channels must be a positive multiple of 8 (8 attention '
                             f'heads), got {self.neck_channels}')
        derived = dict(
            input_size=(w, h),
            stem_channels=int(_STEM_CHANNELS * self.widen),
            stage_channels=tuple(int(c * self.widen) for c in _STAGE_CHANNELS),
            stage_blocks=tuple(max(round(n * self.deepen), 1) for n in _STAGE_BLOCKS),
            rep_blocks=round(3 * self.deepen),
            rep_hidden=int(self.neck_channels * self.widen),
            head_channels=2 * int(256 * self.widen),
            cls_channels=int(256 * self.widen),
            pose_channels=8 * int(36 * self.widen),
            pose_vec_channels=2 * int(256 * self.widen),
        )
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def to_dict(self):
        """Return the free fields as a plain dict (JSON/``weights_only``-safe)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out['input_size'] = list(out['input_size'])
        return out

    @classmethod
    def from_dict(cls, data):
        """Inverse of ``to_dict``; unknown keys raise ValueError."""
        names = {f.name for f in fields(cls) if f.init}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f'unknown ModelConfig fields {sorted(unknown)}')
        data = dict(data)
        if 'input_size' in data:
            data['input_size'] = tuple(data['input_size'])
        return cls(**data)


PRESETS = {
    't': ModelConfig('t', deepen=0.33, widen=0.375, input_size=(416, 416)),
    's': ModelConfig('s', deepen=0.33, widen=0.5),
    'm': ModelConfig('m', deepen=0.67, widen=0.75),
    'l': ModelConfig('l', deepen=1.0, widen=1.0),
}


def preset(variant, num_keypoints=17, input_size=None):
    """Return the preset ``variant`` ('t', 's', 'm' or 'l') with optional overrides."""
    if variant not in PRESETS:
        raise ValueError(f'unknown RTMO variant {variant!r}; choose one of {sorted(PRESETS)}')
    cfg = PRESETS[variant]
    return replace(cfg, num_keypoints=num_keypoints,
                   input_size=tuple(input_size) if input_size else cfg.input_size)
