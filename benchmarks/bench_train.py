"""Training throughput (images/s) of one optimizer step on CPU: RTMO-s at 640x640, batch 2.

A step is what ``rtmo_train.engine.train_one_epoch`` does per batch: forward, SimOTA
assignment and losses, backward, gradient clipping, AdamW, LR schedule and EMA update. Data
loading is excluded (batches are prepared beforehand from synthetic people through the
stage-2 pipeline), so the figure is the model-side cost. Usage:

    python benchmarks/bench_train.py [--variant s] [--size 640] [--batch 2] [--iters 5]
                                     [--threads N]
"""
import argparse
import tempfile
import time

import torch

from rtmo_train.config import preset
from rtmo_train.data.batch import TrainDataset, collate
from rtmo_train.data.coco import CocoKeypointDataset
from rtmo_train.data.pipeline import AugmentConfig, build_pipeline
from rtmo_train.data.synthetic import make_dataset
from rtmo_train.ema import ExpMomentumEMA
from rtmo_train.engine import LossStep, train_one_epoch
from rtmo_train.model.rtmo import build_model
from rtmo_train.optim import LRSchedule, RTMOScheduler, build_optimizer
from rtmo_train.train_config import train_preset


def make_batches(size, batch, count, workdir):
    """``count`` collated batches of synthetic people at ``size`` x ``size``."""
    ann = make_dataset(workdir, batch * count, seed=0, width=size, height=size * 3 // 4)
    source = CocoKeypointDataset(ann, f'{workdir}/images')
    aug = AugmentConfig(input_size=size)
    data = TrainDataset(source, build_pipeline(2, aug, source), seed=0)
    return [collate([data[b * batch + i] for i in range(batch)]) for b in range(count)]


def main(argv=None):
    """Print warm-step throughput in images/s."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--variant', default='s')
    p.add_argument('--size', type=int, default=640)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(preset(args.variant, input_size=(args.size, args.size)))
    recipe = train_preset(args.variant)
    opt = build_optimizer(model, recipe.lr, recipe.weight_decay)
    sched = RTMOScheduler(opt, LRSchedule(), 1000)
    with tempfile.TemporaryDirectory() as tmp:
        batches = make_batches(args.size, args.batch, args.iters + 1, tmp)
    kwargs = dict(loss_cfg=recipe.loss_at(0), device='cpu', ema=ExpMomentumEMA(model),
                  max_norm=recipe.clip_grad, progress=False)
    step = LossStep(model)
    train_one_epoch(model, step, batches[:1], opt, sched, 0, **kwargs)  # warm-up
    start = time.perf_counter()
    train_one_epoch(model, step, batches[1:], opt, sched, 0, **kwargs)
    elapsed = time.perf_counter() - start
    images = args.batch * args.iters
    print(f'RTMO-{args.variant} {args.size}x{args.size} batch {args.batch}, '
          f'{torch.get_num_threads()} threads: {images / elapsed:.2f} images/s '
          f'({elapsed / args.iters:.2f} s/step over {args.iters} steps)')


if __name__ == '__main__':
    main()
