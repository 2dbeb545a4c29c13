"""mmpose 1.3.2's own RTMO training step, timed like ``bench_train``'s (run in a scratch venv).

Not for the project's venv: ``benchmarks/bench_train.py --mmpose-python /tmp/mmref/bin/python``
starts it (the scratch venv recipe is in ``scripts/check_loss_against_mmpose.py``). It reads
the batches ``bench_train`` wrote (``--batches FILE.npz``: the same synthetic people), builds
the config's model and mmpose's AdamW (lr and weight decay of the config), then answers each
line ``N`` on stdin with the seconds N steps took, so the caller can interleave it with its own
steps. A step is what mmengine's ``train_step`` does without the data preprocessor (the inputs
are already network tensors): forward, ``RTMOHead.loss`` (SimOTA, all losses), backward,
gradient clipping (max_norm 0.1, as the config) and the optimizer step. mmpose's EMA hook and
LR schedule run outside the step and cost little; they are left out on both sides' favour.
"""
import argparse
import pathlib
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'scripts'))
from check_loss_against_mmpose import data_samples, import_mmpose_models, load_config  # noqa


def load_batches(path):
    """[(inputs tensor, [target dicts])] from ``bench_train``'s npz."""
    data = np.load(path)
    batches = []
    for b in range(int(data['count'])):
        inputs = torch.from_numpy(data[f'b{b}_inputs'])
        targets = [{k: data[f'b{b}_i{i}_{k}'] for k in ('boxes', 'keypoints',
                                                       'keypoints_visible', 'areas')}
                   for i in range(inputs.shape[0])]
        batches.append((inputs, targets))
    return batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--batches', required=True)
    parser.add_argument('--threads', type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    build = import_mmpose_models()
    cfg = load_config(args.config)
    torch.manual_seed(0)
    model = build(cfg.model).train()
    optim = cfg.optim_wrapper.optimizer
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    clip = cfg.optim_wrapper.get('clip_grad', {}).get('max_norm', 0.1)
    batches = load_batches(args.batches)
    size = batches[0][0].shape[-1]
    samples = [data_samples(targets, size) for _, targets in batches]

    def step(i):
        inputs = batches[i % len(batches)][0]
        losses = model.loss(inputs, samples[i % len(batches)])
        loss = sum(v.mean() for k, v in losses.items() if k.startswith('loss'))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()

    done = 0
    for line in sys.stdin:
        count = int(line)
        start = time.perf_counter()
        for _ in range(count):
            step(done)
            done += 1
        print(f'{time.perf_counter() - start:.6f}', flush=True)


if __name__ == '__main__':
    main()
