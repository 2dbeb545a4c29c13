"""The training loop in two functions, as DETR's ``engine.py``: one epoch, one evaluation.

:class:`LossStep` is the module DDP wraps: its forward runs the network (under autocast when
AMP is on) and the RTMO criterion (always in fp32, outside autocast, as RT-DETR does) and
returns the loss dict of ``rtmo_train.criterion``. Going through a module's ``forward`` is
what lets DDP synchronise gradients.
"""
import json
import math
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import criterion as C
from .assigner import SimOTAAssigner
from .distributed import mean_over_processes
from .evaluation import evaluate_keypoints, pose_results


class LossStep(nn.Module):
    """``forward(inputs, targets, loss_cfg)`` -> loss dict (``criterion.compute_losses``).

    inputs: (B, 3, H, W) float32 BGR 0..255 (``data.batch`` contract); targets: list of B
    dicts in network-input pixels; loss_cfg: the stage's ``LossConfig``. ``amp_dtype``
    (torch.float16 / torch.bfloat16 / None) autocasts the network only. ``channels_last``
    hands the network NHWC inputs (the model's weights should be channels-last too).
    """

    def __init__(self, model, amp_dtype=None, channels_last=False):
        super().__init__()
        self.model = model
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last

    def forward(self, inputs, targets, loss_cfg):
        targets = [_criterion_target(t) for t in targets]
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.model.loss(inputs, targets, loss_cfg)
        model = self.model
        gts = [C.targets_to_tensors(t, i, model.cfg.num_keypoints, inputs)
               for i, t in enumerate(targets)]
        with torch.autocast(inputs.device.type, dtype=self.amp_dtype):
            out = model(inputs)
        out = type(out)(*[None if v is None else [x.float() for x in v] for v in out])
        flat = C.flatten_predictions(model.head, out)
        sigmas = C.keypoint_sigmas(model)
        assigner = SimOTAAssigner(sigmas=sigmas,
                                  use_keypoints_for_center=loss_cfg.use_keypoints_for_center)
        tg = C.assign_targets(flat, gts, assigner)
        return C.head_losses(model.head.dcc, flat, tg, loss_cfg, sigmas)


def _criterion_target(target):
    """The data pipeline calls the stage-2 ignore mask ``ignore_mask`` (H, W); the criterion
    reads a square ``invalid_mask`` in network-input pixels. Same array, other name."""
    if 'ignore_mask' not in target or 'invalid_mask' in target:
        return target
    t = dict(target)
    mask = t.pop('ignore_mask')
    if mask.shape[0] != mask.shape[1]:
        raise ValueError(f'ignore_mask of shape {mask.shape} is not square; stage-2 batches '
                         'must be square (random resize keeps the square input)')
    t['invalid_mask'] = mask
    return t


def train_one_epoch(model, loss_step, loader, optimizer, scheduler, epoch, *, loss_cfg,
                    device, scaler=None, ema=None, max_norm=0.1, batch_resize=None,
                    log_every=50, writer=None, progress=True, max_iters=None):
    """Train ``epoch`` (0-based) over ``loader``; return the epoch means of the logged values.

    Args:
        model: the raw model (EMA source, gradient clipping); ``loss_step`` wraps it (maybe in
            DDP) and returns the loss dict.
        loader: yields ``(inputs, targets)`` (``rtmo_train.data.batch.collate``).
        optimizer, scheduler: stepped once per iteration (scheduler after optimizer).
        loss_cfg: ``LossConfig`` of this epoch's stage.
        scaler: ``torch.amp.GradScaler`` for fp16 AMP, else None.
        ema: ``ExpMomentumEMA`` updated after every step, or None.
        max_norm: clip the global L2 gradient norm to this (0: no clipping; the norm is still
            logged). With a scaler the gradients are unscaled first.
        batch_resize: callable ``(inputs, targets) -> (inputs, targets)`` (random resize).
        writer: TensorBoard ``SummaryWriter`` (rank 0) or None.
        max_iters: stop after this many iterations (tests, benchmarks).

    Raises:
        FloatingPointError: the loss is not finite (names the epoch, iteration and terms).
    """
    loss_step.train()
    sums, count = {}, 0
    total = len(loader) if max_iters is None else min(len(loader), max_iters)
    bar = tqdm(total=total, desc=f'epoch {epoch}', disable=not progress, dynamic_ncols=True,
               leave=False)
    start = time.perf_counter()
    for i, (inputs, targets) in enumerate(loader):
        if i >= total:
            break
        inputs = inputs.to(device, non_blocking=True)
        if batch_resize is not None:
            inputs, targets = batch_resize(inputs, targets)
        losses = loss_step(inputs, targets, loss_cfg)
        loss = C.total_loss(losses)
        if not torch.isfinite(loss):
            terms = {k: round(float(v), 4) for k, v in losses.items()}
            raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch} iteration {i} '
                                     f'({terms}); lower the lr or check the data')
        grad_norm = _backward_step(model, loss, optimizer, scaler, max_norm)
        scheduler.step()
        if ema is not None:
            ema.update(model)
        logged = {k: float(v.detach()) for k, v in losses.items()}
        logged.update(loss=float(loss.detach()), grad_norm=grad_norm,
                      lr=optimizer.param_groups[0]['lr'])
        for k, v in logged.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        bar.update(1)
        if (i + 1) % log_every == 0 or i + 1 == total:
            bar.set_postfix(loss=f'{logged["loss"]:.3f}', lr=f'{logged["lr"]:.2e}')
            if writer is not None:
                step = scheduler.last_step
                for k, v in logged.items():
                    writer.add_scalar(f'train/{k}', v, step)
    bar.close()
    means = {k: v / max(count, 1) for k, v in sums.items()}
    means = mean_over_processes(means)
    means['epoch_time'] = time.perf_counter() - start
    means['iters'] = count
    return means


def _backward_step(model, loss, optimizer, scaler, max_norm):
    """Backward, (unscale,) clip, optimizer step; return the pre-clip gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    else:
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(norm)


@torch.no_grad()
def predict_dataset(model, dataset, max_images=0, progress=True):
    """Run ``model.predict`` on every image of a ``CocoKeypointDataset``; COCO results list.

    Each image is letterboxed to the model input (``RTMO.predict``); results are in image
    pixels (the evaluation contract).
    """
    was_training = model.training
    model.eval()
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    results = []
    try:
        for i in tqdm(range(n), desc='predict', disable=not progress, leave=False):
            sample = dataset.load(i)
            pred = model.predict(sample['img'])
            results += pose_results(sample['image_id'], pred['boxes'], pred['scores'],
                                    pred['keypoints'], pred['keypoint_scores'])
    finally:
        model.train(was_training)
    return results, [dataset.records[i]['image_id'] for i in range(n)]


def evaluate(model, dataset, *, mode='coco', max_images=0, progress=True, verbose=False):
    """COCO keypoint AP of ``model`` (use the EMA module when there is one) on ``dataset``.

    ``dataset``: ``CocoKeypointDataset`` built with ``include_empty=True`` (images without
    people count for false positives). ``mode``: 'coco' or 'crowdpose'
    (``rtmo_train.evaluation``). ``max_images``: evaluate the first N images only.
    Returns the metrics dict (``AP``, ``AP .5``, ...) plus ``num_images``.
    """
    results, image_ids = predict_dataset(model, dataset, max_images, progress)
    gt = _subset_gt(dataset.ann_file, set(image_ids)) if max_images > 0 else dataset.ann_file
    if results:
        metrics = evaluate_keypoints(gt, results, mode=mode, verbose=verbose)
    else:  # xtcocotools cannot load an empty result list
        metrics = {'AP': 0.0}
    metrics['num_images'] = len(image_ids)
    return metrics


def _subset_gt(ann_file, image_ids):
    """The annotation dict of ``ann_file`` restricted to ``image_ids``."""
    with open(ann_file) as f:
        gt = json.load(f)
    gt['images'] = [im for im in gt['images'] if im['id'] in image_ids]
    gt['annotations'] = [a for a in gt['annotations'] if a['image_id'] in image_ids]
    return gt


def seed_everything(seed):
    """Seed python, numpy and torch (all devices)."""
    import random
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
