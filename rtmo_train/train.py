"""``fit(cfg)``: build everything from a ``TrainConfig``, run the epochs, write checkpoints.

Checkpoint (``rtmo_train.checkpoint`` format ``rtmo_train/1``, read with
``torch.load(weights_only=True)``; ``load_model`` opens it for inference/export):

    format, config      ModelConfig dict
    model               weights to use: the EMA weights when EMA is on (as mmpose's
                        ``state_dict``), else the trained weights
    raw_model           the trained (non-averaged) weights, only with EMA
    ema_steps           EMA updates so far
    optimizer, scheduler, scaler   state dicts (scaler None without fp16 AMP)
    epoch               last completed epoch (0-based); a resume starts at epoch + 1
    best_ap, best_epoch, metrics   validation results so far
    train_config        TrainConfig.to_dict()
    rng                 python / numpy / torch (/ cuda) generator states

Files in ``output_dir``: ``latest.pth`` (every epoch), ``epoch_N.pth`` (every
``ckpt_interval`` epochs, the last ``keep_ckpts`` kept), ``best.pth`` (best AP),
``config.yaml`` (resolved config), ``tb/`` (TensorBoard), ``log.jsonl`` (one line per epoch).

Resume is exact at epoch boundaries: every epoch's data order and augmentation are seeded from
(seed, epoch, rank), and the checkpoint holds all other state.
"""
import json
import pathlib
import random
import time

import numpy as np
import torch
import yaml

from rtmo_ros.engine.skeleton import Skeleton, skeleton_for

from .checkpoint import load_model, save_checkpoint
from .data.batch import BatchRandomResize, TrainDataset, collate
from .data.coco import CocoKeypointDataset
from .data.combined import BODY7_TO_COCO, CombinedDataset
from .data.pipeline import build_pipeline
from .distributed import (
    barrier,
    build_sampler,
    cleanup,
    init_distributed,
    sync_norm_buffers,
    wrap_model,
)
from .ema import ExpMomentumEMA
from .engine import LossStep, evaluate, seed_everything, train_one_epoch
from .model.rtmo import build_model
from .optim import RTMOScheduler, build_optimizer


def fit(cfg, resume=None, max_iters_per_epoch=None):
    """Train ``cfg`` (a ``TrainConfig``), optionally resuming from checkpoint ``resume``.

    Runs single-process, or as one rank of ``torchrun`` (see ``distributed``). Returns a dict
    with ``history`` (one dict of epoch means per epoch run here), ``best_ap``, ``best_epoch``
    and ``output_dir``. ``max_iters_per_epoch`` truncates epochs (tests, benchmarks).
    """
    info = init_distributed(cfg.device)
    try:
        return Trainer(cfg, info, max_iters_per_epoch).run(resume)
    finally:
        cleanup()


def autocast_dtype(amp, device):
    """The autocast dtype of train config ``amp`` on ``device`` (None: fp32).

    ``True``: fp16 on CUDA (with a GradScaler), bf16 on the CPU. ``'auto'``: bf16 on a CPU
    that computes it natively (AVX512-BF16 or AMX: 2.2x an fp32 step of RTMO-s measured,
    ``benchmarks/bench_train.py``), fp32 on other CPUs (bf16 emulated there is slower) and on
    CUDA (as mmpose, whose configs train in fp32).
    """
    if amp == 'auto':
        amp = device.type == 'cpu' and (torch.cpu._is_avx512_bf16_supported()
                                        or torch.cpu._is_amx_tile_supported())
    if not amp:
        return None
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def build_source(cfg, sources):
    """The dataset (``len`` + ``load``) of ``sources`` (``DataSource`` list) for ``cfg``."""
    skeleton = skeleton_for(cfg.model.num_keypoints)
    parts = []
    for src in sources:
        src_skeleton = skeleton if src.mapping is None else _plain_skeleton(src.num_keypoints)
        ds = CocoKeypointDataset(cfg.path(src.ann), cfg.path(src.images), src_skeleton)
        pairs = None if src.mapping is None else BODY7_TO_COCO[src.mapping]
        parts.append((ds, pairs, src.ratio))
    if len(parts) == 1 and parts[0][1] is None and parts[0][2] == 1.0:
        return parts[0][0]
    return CombinedDataset(parts, skeleton)


def _plain_skeleton(k):
    """A layout for a source that is mapped onto the model's (only K matters there)."""
    return Skeleton(name=f'source{k}', names=tuple(f'k{i}' for i in range(k)), edges=(),
                    flip_indices=tuple(range(k)), sigmas=(0.05,) * k)


class Trainer:
    """The state of one run; :meth:`run` is the epoch loop. Built by :func:`fit`."""

    def __init__(self, cfg, info, max_iters_per_epoch=None):
        self.cfg, self.info, self.max_iters = cfg, info, max_iters_per_epoch
        self.out = pathlib.Path(cfg.output_dir)
        self.device = torch.device(info.device)
        seed_everything(cfg.seed)  # same initial weights on every rank
        self.model = build_model(cfg.model)
        if cfg.init_weights:
            self.model.load_state_dict(load_model(cfg.init_weights).state_dict())
        if info.distributed and cfg.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.to(self.device)
        if cfg.channels_last:  # oneDNN (CPU) and cuDNN convolutions run faster in NHWC
            self.model.to(memory_format=torch.channels_last)
        self.ema = (ExpMomentumEMA(self.model, cfg.ema_momentum, cfg.ema_gamma)
                    if cfg.ema else None)
        self.sources = {1: build_source(cfg, cfg.train_sets),
                        2: build_source(cfg, cfg.stage2_sets or cfg.train_sets)}
        self.iters_per_epoch = self._iters_per_epoch(len(self.sources[1]))
        lr = cfg.lr * (cfg.batch_size * info.world_size / cfg.scale_lr_base_batch
                       if cfg.scale_lr_base_batch > 0 else 1.0)
        self.optimizer = build_optimizer(self.model, lr, cfg.weight_decay, cfg.encoder_lr_mult,
                                         dcc_lr_mult=cfg.dcc_lr_mult)
        self.scheduler = RTMOScheduler(self.optimizer, cfg.schedule, self.iters_per_epoch)
        amp_dtype = autocast_dtype(cfg.amp, self.device)
        self.precision = str(amp_dtype).replace('torch.', '') + ' autocast' if amp_dtype \
            else 'fp32'
        self.scaler = torch.amp.GradScaler('cuda') if amp_dtype == torch.float16 else None
        self.loss_step = wrap_model(LossStep(self.model, amp_dtype, cfg.channels_last), info)
        self.start_epoch, self.best_ap, self.best_epoch, self.metrics = 0, -1.0, -1, {}
        self.writer = None

    def _iters_per_epoch(self, n):
        per_rank = -(-n // self.info.world_size)
        iters = per_rank // self.cfg.batch_size
        if iters < 1:
            raise ValueError(f'the training set has {n} images, fewer than one batch of '
                             f'{self.cfg.batch_size} per process; lower batch_size')
        return iters if self.max_iters is None else min(iters, self.max_iters)

    def loader(self, stage, epoch):
        """The DataLoader of ``epoch``: sampler, augmentation and workers seeded by epoch."""
        cfg, source = self.cfg, self.sources[stage]
        seed = (cfg.seed * 1_000_003 + epoch) * 1009 + self.info.rank
        dataset = TrainDataset(source, build_pipeline(stage, cfg.augment, source), seed)
        return torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
            sampler=build_sampler(dataset, self.info, cfg.seed, epoch), collate_fn=collate,
            drop_last=True, generator=torch.Generator().manual_seed(seed),
            pin_memory=self.device.type == 'cuda')

    def run(self, resume=None):
        """Train from ``start_epoch`` (or the resumed epoch) to ``cfg.epochs``."""
        cfg, main = self.cfg, self.info.is_main
        if resume:
            self.load(resume)
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            cfg.to_yaml(self.out / 'config.yaml')
            print(yaml.safe_dump({'config': cfg.to_dict()}, sort_keys=False), flush=True)
            print(f'world size {self.info.world_size}, device {self.device} '
                  f'({self.precision}, amp: {cfg.amp}), '
                  f'{self.iters_per_epoch} iterations/epoch, starting at epoch '
                  f'{self.start_epoch}', flush=True)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.out / 'tb'))
        history, started = [], time.perf_counter()
        for epoch in range(self.start_epoch, cfg.epochs):
            # the two stage switches of the mmpose recipes, written out: stage 2 data (no
            # mosaic/mixup, ignore masks) from stage2_epoch; loss settings by epoch
            stage = 2 if epoch >= cfg.stage2_epoch else 1
            loss_cfg = cfg.loss_at(epoch)
            resize = BatchRandomResize(cfg.augment.random_size_range,
                                       seed=cfg.seed * 7919 + epoch)  # same on every rank
            stats = train_one_epoch(
                self.model, self.loss_step, self.loader(stage, epoch), self.optimizer,
                self.scheduler, epoch, loss_cfg=loss_cfg, device=self.device,
                scaler=self.scaler, ema=self.ema, max_norm=cfg.clip_grad, batch_resize=resize,
                log_every=cfg.log_every, writer=self.writer, progress=cfg.progress and main,
                max_iters=self.max_iters)
            stats.update(epoch=epoch, stage=stage)
            stats.update(self.validate(epoch))
            history.append(stats)
            if main:
                self.report(stats, epoch, started)
                self.save_all(epoch, stats)
            barrier()
        if self.writer is not None:
            self.writer.close()
        return {'history': history, 'best_ap': self.best_ap, 'best_epoch': self.best_epoch,
                'output_dir': str(self.out)}

    def validate(self, epoch):
        """Validate on rank 0 when the schedule says so; return {'val/AP', ...} or {}."""
        cfg = self.cfg
        due = ((epoch + 1) % cfg.val_interval == 0 or epoch >= cfg.val_every_epoch_from
               or epoch + 1 == cfg.epochs) if cfg.val_interval > 0 else False
        if not cfg.val_ann or not due:
            return {}
        sync_norm_buffers(self.model)  # mmengine SyncNormHook: same BN stats on all ranks
        if not self.info.is_main:
            return {}
        model = self.ema.module if self.ema is not None else self.model
        dataset = CocoKeypointDataset(cfg.path(cfg.val_ann), cfg.path(cfg.val_images),
                                      include_empty=True)
        mode = 'crowdpose' if cfg.dataset == 'crowdpose' else 'coco'
        metrics = evaluate(model, dataset, mode=mode, max_images=cfg.val_max_images,
                           progress=cfg.progress)
        self.metrics = metrics
        return {f'val/{k}': v for k, v in metrics.items()}

    def report(self, stats, epoch, started):
        """Print one line per epoch (with ETA), append it to log.jsonl and TensorBoard."""
        done = epoch + 1 - self.start_epoch
        eta = (time.perf_counter() - started) / done * (self.cfg.epochs - epoch - 1)
        keys = [k for k in stats if k.startswith('loss') or k.startswith('val/AP')]
        print(f'epoch {epoch} stage {stats["stage"]} lr {stats["lr"]:.3e} '
              + ' '.join(f'{k} {stats[k]:.4f}' for k in keys)
              + f' | {stats["epoch_time"]:.1f}s/epoch, ETA {eta / 60:.1f} min', flush=True)
        with open(self.out / 'log.jsonl', 'a') as f:
            f.write(json.dumps(stats) + '\n')
        if self.writer is not None:
            for k, v in stats.items():
                if k.startswith('val/'):
                    self.writer.add_scalar(k, v, epoch)
            self.writer.add_scalar('train/epoch_loss', stats['loss'], epoch)

    # ------------------------------------------------------------------ checkpoints
    def state(self, epoch):
        """Everything a resume needs (see the module docstring)."""
        extra = dict(optimizer=self.optimizer.state_dict(),
                     scheduler=self.scheduler.state_dict(),
                     scaler=self.scaler.state_dict() if self.scaler is not None else None,
                     epoch=epoch, best_ap=self.best_ap, best_epoch=self.best_epoch,
                     metrics={k: float(v) for k, v in self.metrics.items()},
                     train_config=self.cfg.to_dict(), rng=rng_state())
        if self.ema is not None:
            extra.update(raw_model=self.model.state_dict(), ema_steps=self.ema.steps)
        return extra

    def save_all(self, epoch, stats):
        """latest.pth always; epoch_N.pth every ckpt_interval; best.pth when AP improves."""
        weights = self.ema.module if self.ema is not None else self.model
        ap = stats.get('val/AP')
        if ap is not None and ap > self.best_ap:
            self.best_ap, self.best_epoch = float(ap), epoch
            save_checkpoint(weights, self.out / 'best.pth', **self.state(epoch))
        save_checkpoint(weights, self.out / 'latest.pth', **self.state(epoch))
        if self.cfg.ckpt_interval > 0 and (epoch + 1) % self.cfg.ckpt_interval == 0:
            save_checkpoint(weights, self.out / f'epoch_{epoch + 1}.pth', **self.state(epoch))
            self.prune()

    def prune(self):
        """Keep the newest ``keep_ckpts`` epoch_N.pth files (mmengine ``max_keep_ckpts``)."""
        if self.cfg.keep_ckpts <= 0:
            return
        files = sorted(self.out.glob('epoch_*.pth'), key=lambda p: int(p.stem.split('_')[1]))
        for old in files[:-self.cfg.keep_ckpts]:
            old.unlink()

    def load(self, path):
        """Restore a checkpoint written by :meth:`save_all` (exact resume)."""
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        if not isinstance(ckpt, dict) or 'optimizer' not in ckpt or 'epoch' not in ckpt:
            raise ValueError(f'{path} is not a training checkpoint of rtmo-train fit (no '
                             'optimizer/epoch); use it as init_weights to fine-tune instead')
        self.model.load_state_dict(ckpt.get('raw_model', ckpt['model']))
        if self.ema is not None:
            if 'raw_model' not in ckpt:
                raise ValueError(f'{path} was trained without EMA; resume with ema=false')
            self.ema.load_state_dict({'module': ckpt['model'], 'steps': ckpt['ema_steps']})
        self.optimizer.load_state_dict(ckpt['optimizer'])
        self.scheduler.load_state_dict(ckpt['scheduler'])
        if self.scaler is not None and ckpt.get('scaler'):
            self.scaler.load_state_dict(ckpt['scaler'])
        self.start_epoch = int(ckpt['epoch']) + 1
        self.best_ap, self.best_epoch = float(ckpt['best_ap']), int(ckpt['best_epoch'])
        self.metrics = dict(ckpt.get('metrics') or {})
        set_rng_state(ckpt['rng'])
        if self.info.is_main:
            print(f'resumed from {path}: epoch {ckpt["epoch"]} done, best AP '
                  f'{self.best_ap:.4f}', flush=True)


def rng_state():
    """Python, numpy, torch (and CUDA) generator states as ``weights_only``-safe values."""
    np_state = np.random.get_state(legacy=False)
    state = dict(python=random.getstate(), torch=torch.get_rng_state(),
                 numpy=dict(np_state, state=dict(
                     key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                     pos=int(np_state['state']['pos']))))
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Inverse of :func:`rng_state`."""
    random.setstate(_as_tuple(state['python']))
    torch.set_rng_state(state['torch'])
    np_state = dict(state['numpy'])
    np_state['state'] = dict(key=state['numpy']['state']['key'].numpy().astype(np.uint32),
                             pos=state['numpy']['state']['pos'])
    np.random.set_state(np_state)
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _as_tuple(value):
    """torch.save keeps tuples, but make sure nested lists are tuples for random.setstate."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def evaluate_checkpoint(cfg, checkpoint, max_images=0, verbose=True):
    """AP of ``checkpoint`` (its ``model`` weights: EMA when trained with EMA) on cfg's val set."""
    model = load_model(checkpoint)
    dataset = CocoKeypointDataset(cfg.path(cfg.val_ann), cfg.path(cfg.val_images),
                                  include_empty=True)
    mode = 'crowdpose' if cfg.dataset == 'crowdpose' else 'coco'
    return evaluate(model, dataset, mode=mode, max_images=max_images, progress=cfg.progress,
                    verbose=verbose)
