"""The two RTMO training pipelines (spec section 4.3) from a typed augmentation config.

Stage 1: Mosaic -> perspective RandomAffine -> MixUp (not rtmo-t) -> HSV -> flip -> filter.
Stage 2 (last 20/30 epochs): ignore mask -> affine (a centred fit-resize, or random for m/l
COCO/body7) -> HSV -> flip -> filter. The switch is an explicit ``if`` in the training loop,
which rebuilds its DataLoader with the stage-2 list.
"""
from dataclasses import dataclass, replace

from rtmo_train.data.transforms import (
    PAD_VALUE,
    FilterAnnotations,
    HSVAugment,
    IgnoreMask,
    MixUp,
    Mosaic,
    RandomAffine,
    RandomFlip,
)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; defaults are rtmo-s COCO (``rtmo-s_8xb32-600e_coco-640x640``)."""

    input_size: int = 640                   # side of the square network input
    mosaic_center_range: tuple = (0.5, 1.5)
    shift_factor: float = 0.1               # stage-1 perspective affine
    rotate_factor: float = 10.0             # degrees
    scale_factor: tuple = (0.75, 1.0)
    shear_factor: float = 2.0               # degrees, mmpose default
    mixup: bool = True                      # False for rtmo-t
    mixup_ratio_range: tuple = (0.8, 1.6)
    hsv_deltas: tuple = (5, 30, 30)         # hue, saturation, value
    flip_prob: float = 0.5
    # stage-2 affine: False = centred fit-resize (s, t, CrowdPose); True = mmpose defaults
    # shift 0.2, scale (0.75, 1.5), rotation 30, truncated normal (m/l COCO and body7)
    stage2_random_affine: bool = False
    random_size_range: tuple = (480, 800)   # BatchRandomResize, multiples of 32
    pad_value: int = PAD_VALUE


def augment_preset(variant, dataset='coco'):
    """Return the :class:`AugmentConfig` of an mmpose RTMO config.

    ``variant`` is 't', 's', 'm' or 'l'; ``dataset`` is 'coco', 'body7', 'crowdpose' or
    'body7-crowdpose' (rtmo-l trained on body7 mapped to CrowdPose's 14 keypoints).
    """
    if variant not in ('t', 's', 'm', 'l'):
        raise ValueError(f"variant must be one of 't', 's', 'm', 'l', got {variant!r}")
    if dataset not in ('coco', 'body7', 'crowdpose', 'body7-crowdpose'):
        raise ValueError(f'unknown dataset {dataset!r}; use coco, body7, crowdpose or '
                         'body7-crowdpose')
    cfg = AugmentConfig()
    if variant == 't':
        cfg = replace(cfg, input_size=416, mixup=False, random_size_range=(320, 640))
    if dataset == 'crowdpose':
        cfg = replace(cfg, shift_factor=0.2, rotate_factor=30.0, scale_factor=(0.5, 1.5),
                      mixup_ratio_range=(0.6, 1.6))
    if variant in ('m', 'l') and dataset in ('coco', 'body7'):
        cfg = replace(cfg, stage2_random_affine=True)
    return cfg


def build_pipeline(stage, cfg, dataset):
    """Return the list of transforms of training ``stage`` (1 or 2).

    ``dataset`` supplies the extra Mosaic/MixUp images (``len`` and ``load(index, rng)``) and
    the ``skeleton`` whose flip indices the flips use.
    """
    flip_indices = dataset.skeleton.flip_indices
    hsv = HSVAugment(*cfg.hsv_deltas)
    flip = RandomFlip(flip_indices, cfg.flip_prob)
    if stage == 1:
        transforms = [
            Mosaic(dataset, cfg.input_size, cfg.mosaic_center_range, cfg.pad_value),
            RandomAffine(cfg.input_size, 'perspective', shift_factor=cfg.shift_factor,
                         scale_factor=cfg.scale_factor, rotate_factor=cfg.rotate_factor,
                         shear_factor=cfg.shear_factor, distribution='uniform',
                         pad_value=cfg.pad_value)]
        if cfg.mixup:
            transforms.append(MixUp(dataset, flip_indices, cfg.input_size,
                                    cfg.mixup_ratio_range, pad_value=cfg.pad_value))
        return transforms + [hsv, flip, FilterAnnotations()]
    if stage == 2:
        p = 1.0 if cfg.stage2_random_affine else 0.0
        affine = RandomAffine(cfg.input_size, 'affine', shift_prob=p, scale_prob=p,
                              rotate_prob=p, scale_type='long', pad_value=cfg.pad_value)
        return [IgnoreMask(), affine, hsv, flip, FilterAnnotations()]
    raise ValueError(f'stage must be 1 or 2, got {stage!r}')


def apply_pipeline(transforms, sample, rng):
    """Run ``sample`` through ``transforms`` drawing from ``rng``; return the result."""
    for t in transforms:
        sample = t(sample, rng)
    return sample
