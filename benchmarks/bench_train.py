"""Training throughput (images/s) of one optimizer step on CPU: RTMO-s at 640x640, batch 2.

A step is what ``rtmo_train.engine.train_one_epoch`` does per batch: forward, SimOTA
assignment and losses, backward, gradient clipping, AdamW, LR schedule and EMA update. Data
loading is excluded (batches are prepared beforehand from synthetic people through the
stage-2 pipeline), so the figure is the model-side cost. Three recipes of ours are timed: the
plain fp32 step (NCHW), channels-last fp32 and bf16 autocast with channels-last; the default
config (``amp: auto``) is the last on a CPU with native bf16 (AVX512-BF16 / AMX), the second
elsewhere. With ``--mmpose-python`` (a scratch venv with mmpose 1.3.2, see
``scripts/check_loss_against_mmpose.py``) mmpose's own step on the same batches runs in a
second process (``benchmarks/mmpose_train_step.py``), interleaved round by round with ours so
both see the same machine load, and the ratios to it are printed. Usage:

    python benchmarks/bench_train.py [--variant s] [--size 640] [--batch 2] [--iters 2]
                                     [--rounds 3] [--threads N] [--mmpose-python PY]
"""
import argparse
import copy
import pathlib
import subprocess
import tempfile
import time

import numpy as np
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
from rtmo_train.train import autocast_dtype
from rtmo_train.train_config import train_preset

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = {'s': 'body_2d_keypoint/rtmo/coco/rtmo-s_8xb32-600e_coco-640x640.py',
           'm': 'body_2d_keypoint/rtmo/coco/rtmo-m_16xb16-600e_coco-640x640.py',
           'l': 'body_2d_keypoint/rtmo/coco/rtmo-l_16xb16-600e_coco-640x640.py'}
# the default config (amp: auto, channels_last: true) is bf16 on a CPU with native bf16
_DEFAULT_BF16 = autocast_dtype('auto', torch.device('cpu')) == torch.bfloat16
RECIPES = {'fp32 NCHW': (None, False),
           'fp32 channels-last' + ('' if _DEFAULT_BF16 else ' (default)'): (None, True),
           'amp bf16 channels-last' + (' (default)' if _DEFAULT_BF16 else ''):
               (torch.bfloat16, True)}


def make_batches(size, batch, count, workdir):
    """``count`` collated batches of synthetic people at ``size`` x ``size``."""
    ann = make_dataset(workdir, batch * count, seed=0, width=size, height=size * 3 // 4)
    source = CocoKeypointDataset(ann, f'{workdir}/images')
    aug = AugmentConfig(input_size=size)
    data = TrainDataset(source, build_pipeline(2, aug, source), seed=0)
    return [collate([data[b * batch + i] for i in range(batch)]) for b in range(count)]


def save_batches(batches, path):
    """The batches as plain arrays for ``mmpose_train_step.py``."""
    arrays = {'count': len(batches)}
    for b, (inputs, targets) in enumerate(batches):
        arrays[f'b{b}_inputs'] = inputs.numpy()
        for i, t in enumerate(targets):
            for key in ('boxes', 'keypoints', 'keypoints_visible', 'areas'):
                arrays[f'b{b}_i{i}_{key}'] = np.asarray(t[key], np.float32)
    np.savez(path, **arrays)


class Ours:
    """One recipe of ours: its own model copy, optimizer, schedule and EMA."""

    def __init__(self, model, recipe, amp_dtype, channels_last, batches):
        self.model = copy.deepcopy(model)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt = build_optimizer(self.model, recipe.lr, recipe.weight_decay)
        self.sched = RTMOScheduler(self.opt, LRSchedule(), 1000)
        self.step = LossStep(self.model, amp_dtype, channels_last)
        self.kwargs = dict(loss_cfg=recipe.loss_at(0), device='cpu',
                           ema=ExpMomentumEMA(self.model), max_norm=recipe.clip_grad,
                           progress=False)
        self.batches = batches

    def run(self, count):
        start = time.perf_counter()
        train_one_epoch(self.model, self.step, self.batches[:count], self.opt, self.sched, 0,
                        **self.kwargs)
        return time.perf_counter() - start


class Mmpose:
    """mmpose's step in the scratch venv, driven line by line."""

    def __init__(self, python, variant, batches_file, threads):
        args = [python, str(HERE / 'mmpose_train_step.py'), CONFIGS[variant], '--batches',
                str(batches_file), '--threads', str(threads)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def run(self, count):
        self.proc.stdin.write(f'{count}\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit('mmpose_train_step.py ended early; see its messages above')
        return float(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main(argv=None):
    """Print warm-step throughput in images/s, and the ratios to mmpose's when measured."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--variant', default='s')
    p.add_argument('--size', type=int, default=640)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--iters', type=int, default=2, help='steps per round and runner')
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    p.add_argument('--mmpose-python', help="a scratch venv's python with mmpose 1.3.2")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    model = build_model(preset(args.variant, input_size=(args.size, args.size)))
    recipe = train_preset(args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        batches = make_batches(args.size, args.batch, args.iters, tmp)
        runners = {name: Ours(model, recipe, dtype, cl, batches)
                   for name, (dtype, cl) in RECIPES.items()}
        if args.mmpose_python:
            save_batches(batches, f'{tmp}/batches.npz')
            runners['mmpose 1.3.2 (fp32)'] = Mmpose(args.mmpose_python, args.variant,
                                                    f'{tmp}/batches.npz', threads)
        seconds = {name: [] for name in runners}
        for runner in runners.values():  # warm-up: first-call allocations, kernels
            runner.run(1)
        for _ in range(args.rounds):
            for name, runner in runners.items():
                seconds[name].append(runner.run(args.iters))
        if 'mmpose 1.3.2 (fp32)' in runners:
            runners['mmpose 1.3.2 (fp32)'].close()
    rate = {name: args.batch * args.iters / float(np.median(s)) for name, s in seconds.items()}
    print(f'RTMO-{args.variant} {args.size}x{args.size} batch {args.batch}, {threads} threads, '
          f'{args.rounds} interleaved rounds of {args.iters} steps, median images/s:')
    base = rate.get('mmpose 1.3.2 (fp32)')
    for name, value in rate.items():
        ratio = f'   {value / base:.2f}x mmpose' if base else ''
        print(f'  {name:<34} {value:6.2f}{ratio}')


if __name__ == '__main__':
    main()
