"""The training loop on real synthetic people: learning, exact resume, 2-process gloo DDP.

Tiny model (widen 0.125) at 160 px, 4 images, CPU, one thread per process.
"""
import copy
import socket

import pytest
import torch
import torch.multiprocessing as mp

from rtmo_train.data.batch import TrainDataset, collate
from rtmo_train.data.coco import CocoKeypointDataset
from rtmo_train.data.pipeline import build_pipeline
from rtmo_train.data.synthetic import make_dataset
from rtmo_train.distributed import cleanup, init_distributed
from rtmo_train.ema import ExpMomentumEMA
from rtmo_train.engine import LossStep, train_one_epoch
from rtmo_train.model.rtmo import build_model
from rtmo_train.optim import LRSchedule, RTMOScheduler, build_optimizer
from rtmo_train.train import Trainer, autocast_dtype, fit
from rtmo_train.train_config import apply_overrides, tiny_preset

SIZE = 160


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    make_dataset(str(root / 'train'), 4, seed=3, width=224, height=160)
    return root


def small_config(root, out, *extra):
    return apply_overrides(tiny_preset(), [
        f'data_root={root}', f'output_dir={out}', 'batch_size=2', 'val_ann=""',
        f'model.input_size=[{SIZE},{SIZE}]', f'augment.input_size={SIZE}',
        f'augment.random_size_range=[{SIZE},{SIZE}]', 'tensorboard=false', 'progress=false',
        'schedule.warmup_epochs=0', 'model.widen=0.125', *extra])  # smallest: fast


def test_channels_last_gives_the_losses_and_gradients_of_contiguous_training(data_root):
    """NHWC (the default, for speed) computes the same step as NCHW, to float32 rounding."""
    torch.manual_seed(0)
    cfg = small_config(data_root, 'unused')
    source = CocoKeypointDataset(data_root / 'train/annotations.json', data_root / 'train/images')
    dataset = TrainDataset(source, build_pipeline(2, cfg.augment, source), seed=0)
    inputs, targets = collate([dataset[0], dataset[1]])
    model = build_model(cfg.model).train()
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    results = []
    for net, channels_last in ((model, False), (nhwc, True)):
        losses = LossStep(net, channels_last=channels_last)(inputs, targets, cfg.loss_at(0))
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
        total.backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        results.append((float(total), grads))
    assert cfg.channels_last
    assert abs(results[0][0] - results[1][0]) <= 1e-4 * abs(results[0][0])
    # the gradients differ more than the losses: on the CPU, BatchNorm's NCHW kernels sum in
    # float64, its NHWC ones in float32 (measured against a float64 run: NCHW 8e-5, NHWC
    # 3.5e-3 relative, all of it in the BatchNorm parameters)
    (_, g0), (_, g1) = results
    assert float((g0 - g1).norm() / g0.norm()) <= 1e-2


def few_iterations(data_root, amp_dtype=None):
    """15 steps on one batch: (per-step losses, samples assigned in the first)."""
    torch.manual_seed(0)
    cfg = small_config(data_root, 'unused')
    model = build_model(cfg.model)
    source = CocoKeypointDataset(data_root / 'train/annotations.json', data_root / 'train/images')
    dataset = TrainDataset(source, build_pipeline(2, cfg.augment, source), seed=0)
    batch = collate([dataset[0], dataset[1]])
    opt = build_optimizer(model, 5e-3, 0.05, dcc_lr_mult=cfg.dcc_lr_mult)
    sched = RTMOScheduler(opt, LRSchedule(warmup_epochs=0, min_lr=5e-3), 1)
    ema = ExpMomentumEMA(model)
    stats = [train_one_epoch(model, LossStep(model, amp_dtype), [batch], opt, sched, epoch,
                             loss_cfg=cfg.loss_at(0), device='cpu', ema=ema, progress=False)
             for epoch in range(15)]
    assert ema.steps == 15
    return [s['loss'] for s in stats], stats[0]['num_samples']


def test_a_few_iterations_reduce_the_loss(data_root):
    losses, samples = few_iterations(data_root)
    assert losses[-1] < 0.9 * losses[0], losses  # 40.1 -> 32.5 measured
    assert samples > 0


def test_bf16_autocast_reduces_the_loss_as_fp32_does(data_root):
    # amp: auto trains in bf16 on CPUs with native bf16: the same start, the same descent
    fp32, _ = few_iterations(data_root)
    bf16, samples = few_iterations(data_root, torch.bfloat16)
    assert samples > 0 and abs(bf16[0] - fp32[0]) <= 0.02 * fp32[0], (bf16[0], fp32[0])
    assert bf16[-1] < 0.9 * bf16[0] and abs(bf16[-1] - fp32[-1]) <= 0.05 * fp32[-1], (bf16, fp32)


def test_amp_auto_is_bf16_only_on_a_cpu_that_computes_it_natively():
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    cpu, cuda = torch.device('cpu'), torch.device('cuda', 0)
    assert autocast_dtype('auto', cpu) == (torch.bfloat16 if native else None)
    assert autocast_dtype('auto', cuda) is None  # fp32 on GPUs, as mmpose's configs
    assert autocast_dtype(True, cpu) == torch.bfloat16
    assert autocast_dtype(True, cuda) == torch.float16
    assert autocast_dtype(False, cpu) is None
    with pytest.raises(ValueError, match="amp must be one of .*'auto'"):
        small_config('unused', 'unused', 'amp=maybe')


def test_resume_reproduces_the_next_epoch_exactly(data_root, tmp_path):
    full = fit(small_config(data_root, tmp_path / 'full', 'epochs=2'), max_iters_per_epoch=1)
    fit(small_config(data_root, tmp_path / 'part', 'epochs=1'), max_iters_per_epoch=1)
    resumed = fit(small_config(data_root, tmp_path / 'part', 'epochs=2'),
                  resume=tmp_path / 'part/latest.pth', max_iters_per_epoch=1)
    assert [h['epoch'] for h in resumed['history']] == [1]
    assert resumed['history'][0]['loss'] == full['history'][1]['loss']
    a = torch.load(tmp_path / 'full/latest.pth', weights_only=True)
    b = torch.load(tmp_path / 'part/latest.pth', weights_only=True)
    for key in ('model', 'raw_model'):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a['epoch'] == b['epoch'] == 1 and a['scheduler'] == b['scheduler']
    assert not all(torch.equal(a['model'][k], a['raw_model'][k]) for k in a['model'])


def _ddp_worker(rank, port, root, out):
    import os
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE='2', LOCAL_RANK=str(rank))
    cfg = small_config(root, out, 'epochs=1', 'device=cpu')
    trainer = Trainer(cfg, init_distributed('cpu'), max_iters_per_epoch=2)
    try:
        stats = trainer.run()['history'][0]
        torch.save({'model': trainer.model.state_dict(), 'loss': stats['loss'],
                    'iters': stats['iters']}, f'{out}/rank{rank}.pt')
    finally:
        cleanup()


def test_two_process_gloo_ddp_keeps_ranks_identical(data_root, tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(data_root), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    assert r0['iters'] == r1['iters'] == 1  # 4 images / 2 ranks / batch 2
    assert r0['loss'] == r1['loss']  # epoch means are averaged over ranks
    params = [k for k in r0['model'] if 'running' not in k and 'num_batches' not in k]
    assert all(torch.equal(r0['model'][k], r1['model'][k]) for k in params)
    start = build_model(small_config(data_root, tmp_path).model).state_dict()
    assert not torch.equal(start['backbone.stem.conv.conv.weight'],
                           r0['model']['backbone.stem.conv.conv.weight'])
