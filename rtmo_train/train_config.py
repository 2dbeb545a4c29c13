"""Typed training configuration (``TrainConfig``), the mmpose recipes as presets, YAML I/O.

One dataclass holds everything a run needs; nested parts are the other modules' own typed
configs (``ModelConfig``, ``LRSchedule``, ``LossConfig``, ``AugmentConfig``). The resolved
config is printed at start-up and saved, as a plain dict, in every checkpoint.

Presets (:func:`train_preset`) reproduce ``configs/body_2d_keypoint/rtmo/*/*.py`` of mmpose
1.3.2 (spec section 4.4): AdamW lr 4e-3, wd 0.05, clip 0.1, EMA, 600 epochs (700 CrowdPose),
batch 32 per GPU x 8 GPUs (t, s) or 16 x 16 (m, l) = 256 in total. ``tiny`` is a CPU-sized
recipe for synthetic people (see ``configs/tiny_synthetic.yaml``).
"""
from dataclasses import dataclass, field, fields, replace
import os
from typing import Optional, Tuple

import yaml

from .config import ModelConfig, preset
from .criterion import LossConfig, loss_schedule
from .data.pipeline import AugmentConfig, augment_preset
from .optim import LRSchedule

AMP_CHOICES = (True, False, 'auto')
DATASETS = ('coco', 'body7', 'crowdpose', 'body7-crowdpose', 'synthetic')


@dataclass(frozen=True)
class DataSource:
    """One annotation file (COCO keypoint format) and its image folder.

    Relative paths are resolved against ``TrainConfig.data_root``. ``mapping`` names a
    ``rtmo_train.data.combined.BODY7_TO_COCO`` entry (None: same layout as the model);
    ``ratio`` resamples the source to ``round(len * ratio)`` images per epoch;
    ``num_keypoints`` is the source's keypoint count (needed with a mapping).
    """

    ann: str
    images: str
    mapping: Optional[str] = None
    ratio: float = 1.0
    num_keypoints: int = 17


@dataclass(frozen=True)
class TrainConfig:
    """A complete training run. Epochs are 0-based; lr and batch are per process."""

    name: str = 'rtmo-s_coco'
    dataset: str = 'coco'          # picks the evaluation flavour (crowdpose: AP E/M/H)
    model: ModelConfig = field(default_factory=lambda: preset('s'))
    # data (relative paths are under data_root)
    data_root: str = 'data'
    train_sets: Tuple[DataSource, ...] = (
        DataSource('coco/annotations/person_keypoints_train2017.json', 'coco/train2017'),)
    stage2_sets: Tuple[DataSource, ...] = ()   # empty: the same as train_sets
    val_ann: str = 'coco/annotations/person_keypoints_val2017.json'
    val_images: str = 'coco/val2017'
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # optimisation
    epochs: int = 600
    batch_size: int = 32           # per process; mmpose: 8 x 32 (t, s), 16 x 16 (m, l)
    lr: float = 4e-3               # for a total batch of 256
    scale_lr_base_batch: int = 0   # >0: lr *= total batch / this (mmpose --auto-scale-lr 256)
    weight_decay: float = 0.05
    encoder_lr_mult: float = 0.05
    dcc_lr_mult: float = 1.0       # not mmpose: lr multiplier of head.dcc (tiny: 0.25)
    clip_grad: float = 0.1         # max L2 norm of all gradients; 0 = off
    schedule: LRSchedule = field(default_factory=LRSchedule)
    # loss stages: stage1 until loss_switch_epoch, stage2 after, + box L1 from stage2_epoch
    loss_stage1: LossConfig = field(default_factory=LossConfig)
    loss_stage2: LossConfig = field(default_factory=LossConfig)
    loss_switch_epoch: int = 280
    stage2_epoch: int = 579        # no mosaic/mixup from here (mmpose: epochs - 20 - 1)
    # weights
    ema: bool = True
    ema_momentum: float = 2e-4
    ema_gamma: float = 2000.0
    amp: object = 'auto'           # true: CUDA fp16 autocast + GradScaler, CPU bf16 autocast;
    # auto: bf16 autocast on a CPU with native bf16 (AVX512-BF16 / AMX), fp32 elsewhere
    channels_last: bool = True     # NHWC activations and weights: faster convolutions
    init_weights: str = ''         # checkpoint to start from (mmpose .pth or rtmo_train)
    # runtime
    seed: int = 0
    device: str = 'auto'           # auto: cuda:LOCAL_RANK if available, else cpu
    num_workers: int = 8
    sync_bn: bool = False          # mmpose RTMO does not use SyncBN (SyncNormHook instead)
    output_dir: str = 'work_dirs/rtmo-s_coco'
    val_interval: int = 20
    val_every_epoch_from: int = 580
    val_max_images: int = 0        # >0: evaluate on the first N val images only
    ckpt_interval: int = 40
    keep_ckpts: int = 3
    log_every: int = 50
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self):
        """Validate the fields that would otherwise fail deep inside a run."""
        if self.dataset not in DATASETS:
            raise ValueError(f'dataset must be one of {DATASETS}, got {self.dataset!r}')
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f'epochs and batch_size must be >= 1, got {self.epochs}, '
                             f'{self.batch_size}')
        if self.augment.input_size != self.model.input_size[0] or \
                self.model.input_size[0] != self.model.input_size[1]:
            raise ValueError(f'augment.input_size {self.augment.input_size} must equal the '
                             f'square model.input_size {self.model.input_size}')
        if not self.train_sets:
            raise ValueError('train_sets is empty; give at least one {ann, images} source')
        if self.amp not in AMP_CHOICES or not isinstance(self.amp, (bool, str)):
            raise ValueError(f'amp must be one of {AMP_CHOICES}, got {self.amp!r}')

    def loss_at(self, epoch):
        """The ``LossConfig`` of 0-based ``epoch`` (the stage switches, written out)."""
        if epoch >= self.stage2_epoch:
            return replace(self.loss_stage2, use_aux_loss=True)
        if epoch >= self.loss_switch_epoch:
            return self.loss_stage2
        return self.loss_stage1

    def path(self, relative):
        """``relative`` under ``data_root`` (absolute paths are returned unchanged)."""
        return relative if os.path.isabs(relative) else os.path.join(self.data_root, relative)

    def to_dict(self):
        """Plain dict of builtins (YAML- and ``weights_only``-safe)."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown keys raise."""
        return _build(cls, data, 'config')

    def to_yaml(self, path):
        """Write the config to ``path`` as YAML."""
        with open(path, 'w') as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)

    @classmethod
    def from_yaml(cls, path):
        """Read a config written by :meth:`to_yaml` (or by hand)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f'training config not found: {path}')
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f'{path} must hold a YAML mapping of TrainConfig fields')
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'{path}: {exc}') from exc


_NESTED = {'model': ModelConfig, 'augment': AugmentConfig, 'schedule': LRSchedule,
           'loss_stage1': LossConfig, 'loss_stage2': LossConfig}
_SOURCES = ('train_sets', 'stage2_sets')


def _plain(obj):
    if isinstance(obj, ModelConfig):
        return obj.to_dict()
    if hasattr(obj, '__dataclass_fields__'):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj) if f.init}
    if isinstance(obj, (tuple, list)):
        return [_plain(v) for v in obj]
    return obj


def _build(cls, data, where):
    if cls is ModelConfig:
        return ModelConfig.from_dict(data)
    if not isinstance(data, dict):
        raise ValueError(f'{where} must be a mapping, got {data!r}')
    names = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f'unknown {cls.__name__} fields at {where}: {unknown}; known: '
                         f'{sorted(names)}')
    kwargs = {}
    for key, value in data.items():
        if cls is TrainConfig and key in _NESTED:
            value = _build(_NESTED[key], value, f'{where}.{key}')
        elif cls is TrainConfig and key in _SOURCES:
            value = tuple(_build(DataSource, v, f'{where}.{key}') for v in value or ())
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def apply_overrides(cfg, assignments):
    """Return ``cfg`` with ``key=value`` strings applied (dotted keys reach nested fields).

    Values are parsed as YAML: ``epochs=10``, ``schedule.min_lr=1e-4``, ``amp=true``,
    ``model.input_size=[320,320]``.
    """
    data = cfg.to_dict()
    for item in assignments:
        if '=' not in item:
            raise ValueError(f'override {item!r} must look like key=value (e.g. epochs=10)')
        key, text = item.split('=', 1)
        node, parts = data, key.strip().split('.')
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f'override {item!r}: {part!r} is not a nested section')
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f'override {item!r}: unknown field {key!r}')
        node[parts[-1]] = parse_value(text)
    return TrainConfig.from_dict(data)


def parse_value(text):
    """YAML-parse an override value; also read '1e-5' as a float (YAML 1.1 wants '1.0e-5')."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# --------------------------------------------------------------------------------- presets
_COCO_TRAIN = DataSource('coco/annotations/person_keypoints_train2017.json', 'coco/train2017')
_CROWDPOSE_TRAIN = DataSource('crowdpose/annotations/mmpose_crowdpose_trainval.json',
                              'pose/CrowdPose/images', num_keypoints=14)
# mmpose body7 configs (data_root 'data/'), with their sample_ratio_factor and source K
_BODY7 = (
    _COCO_TRAIN,
    DataSource('aic/annotations/aic_train.json',
               'pose/ai_challenge/ai_challenger_keypoint_train_20170902/keypoint_train_images_'
               '20170902', 'aic', 0.3, 14),
    DataSource('crowdpose/annotations/mmpose_crowdpose_trainval.json',
               'pose/CrowdPose/images', 'crowdpose', 0.5, 14),
    DataSource('mpii/annotations/mpii_train.json', 'pose/MPI/images', 'mpii', 0.3, 16),
    DataSource('jhmdb/annotations/Sub1_train.json', 'pose/JHMDB', 'jhmdb', 0.3, 15),
    DataSource('halpe/annotations/halpe_train_v1.json',
               'pose/Halpe/hico_20160224_det/images/train2015', 'halpe', 0.4, 136),
    DataSource('posetrack18/annotations/posetrack18_train.json', 'pose/PoseChallenge2018',
               'posetrack', 0.3, 17),
)


def train_preset(variant, dataset='coco'):
    """The mmpose 1.3.2 recipe of RTMO-``variant`` on ``dataset`` (or ``'tiny'``).

    ``variant``: 't', 's', 'm', 'l'; ``dataset``: 'coco', 'body7', 'crowdpose' or
    'body7-crowdpose'. ``train_preset('tiny')`` is the CPU recipe for synthetic people.
    """
    if variant == 'tiny':
        return tiny_preset()
    if dataset not in DATASETS[:4]:
        raise ValueError(f'dataset must be one of {DATASETS[:4]}, got {dataset!r}')
    crowd = dataset in ('crowdpose', 'body7-crowdpose')
    k = 14 if crowd else 17
    losses = loss_schedule(variant, 'crowdpose' if crowd else 'coco')
    big = variant in ('m', 'l')
    cfg = TrainConfig(
        name=f'rtmo-{variant}_{dataset}', dataset='crowdpose' if crowd else 'coco',
        model=preset(variant, num_keypoints=k), augment=augment_preset(variant, dataset),
        batch_size=16 if big else 32, loss_stage1=losses.stage1, loss_stage2=losses.stage2,
        loss_switch_epoch=losses.switch_epoch, stage2_epoch=losses.aux_epoch,
        epochs=losses.max_epochs, output_dir=f'work_dirs/rtmo-{variant}_{dataset}')
    if dataset == 'body7':  # the last 20 epochs train on COCO only (YOLOXPoseModeSwitchHook)
        cfg = replace(cfg, train_sets=_BODY7, stage2_sets=(_COCO_TRAIN,))
    if crowd:
        # crowdpose configs: cosine to 349 (T_max 350), x2.5 at 349, cosine T_max 320 to 670,
        # validation every 50 epochs then every epoch from 670, checkpoints every 50
        cfg = replace(cfg, schedule=LRSchedule(cosine1_tmax=350, restart_epoch=349,
                                               cosine2_tmax=320, flat_epoch=670),
                      val_ann='crowdpose/annotations/mmpose_crowdpose_test.json',
                      val_images='pose/CrowdPose/images', val_interval=50,
                      val_every_epoch_from=670, ckpt_interval=50)
        sources = _BODY7 if dataset == 'body7-crowdpose' else (_CROWDPOSE_TRAIN,)
        if dataset == 'body7-crowdpose':  # body7 mapped to CrowdPose-14 is not shipped here
            raise ValueError('the body7-crowdpose recipe needs body7 -> CrowdPose keypoint '
                             'mappings, which rtmo_train.data.combined does not provide')
        cfg = replace(cfg, train_sets=sources)
    return cfg


def tiny_preset():
    """CPU recipe: a ~2 M-parameter RTMO (widen 0.25, 96-wide neck) on synthetic people at
    320x320, about 80 minutes on two CPU threads (3000 images, ~2300 with people: 26 epochs
    of ~285 steps).

    Data (``configs/tiny_synthetic.yaml``): ``make_dataset`` images of 320x240 with up to 3
    people 0.3-0.9 of the image tall. rtmo-s loss settings with three from-scratch aids that
    mmpose (pretrained backbone, 256 images a batch, 600 epochs) does not need (measured on
    a four-image overfit, see the README):

    * the DCC starts from small, smooth bin encoders (``DCC.init_bin_encoders``) and trains
      at a quarter of the lr (``dcc_lr_mult``): without them, its keypoints (the output)
      stayed 35-60 px off, AP 0; at full lr its bin logits blow up;
    * ``kpt_l1_weight``: an L1 loss pulls the regression keypoints, which the assigner and
      the classification targets use, from where the OKS loss has no gradient; without it
      they stayed ~32 px off (the DCC still fitted, AP 0.68);
    * the MLE loss does not move the boxes (``dcc_box_grad=False``).

    The mmpose recipe compressed to 26 epochs: mosaic + stage-1 losses for the first half,
    then no mosaic with the stage-2 losses (proxy targets, box L1), so that training ends on
    the evaluation distribution; the lr schedule keeps its shape (cosine, x2.5 restart at the
    switch, cosine). EMA momentum raised so that the average spans about 500 of the steps.
    These 26 epochs reach AP ~0.16; the bundled demo model is this run resumed to 64 epochs
    (best at 63) at constant lr steps (``scripts/package_demo_model.py`` lists the commands).
    """
    model = ModelConfig('tiny', deepen=0.33, widen=0.25, input_size=(320, 320),
                        neck_channels=96)
    losses = loss_schedule('s', 'coco')
    scratch = dict(dcc_box_grad=False, kpt_l1_weight=5.0)
    return TrainConfig(
        name='rtmo-tiny_synthetic', dataset='synthetic', model=model,
        data_root='data/synthetic',
        train_sets=(DataSource('train/annotations.json', 'train/images'),),
        val_ann='val/annotations.json', val_images='val/images',
        augment=replace(augment_preset('t', 'coco'), input_size=320,
                        random_size_range=(288, 352)),
        epochs=26, batch_size=8, lr=2e-3, dcc_lr_mult=0.25, num_workers=0,
        schedule=LRSchedule(warmup_epochs=1, cosine1_tmax=13, restart_epoch=13,
                            cosine2_tmax=13, flat_epoch=25, min_lr=4e-4),
        loss_stage1=replace(losses.stage1, **scratch),
        loss_stage2=replace(losses.stage2, **scratch),
        loss_switch_epoch=13, stage2_epoch=13, ema_momentum=2e-3, ema_gamma=200.0,
        output_dir='work_dirs/rtmo-tiny_synthetic', val_interval=3,
        val_every_epoch_from=22, ckpt_interval=5, log_every=20)
