"""Distributed data parallel training under ``torchrun`` (NCCL on GPUs, gloo on CPU).

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain
``python``/``rtmo-train`` call sees none of them and runs as a single process. mmpose RTMO
trains with plain BatchNorm (no SyncBN) and averages BatchNorm buffers across processes
before each validation (mmengine ``SyncNormHook``): :func:`sync_norm_buffers`.
"""
from dataclasses import dataclass
import os

import torch
from torch import nn
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, and its torch ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = 'cpu'

    @property
    def is_main(self):
        """True on rank 0 (the process that logs, evaluates and writes checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def pick_device(requested='auto', local_rank=0):
    """'auto' -> 'cuda:LOCAL_RANK' when CUDA is available, else 'cpu'; others unchanged."""
    if requested != 'auto':
        return requested
    return f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'


def init_distributed(device='auto'):
    """Join the ``torchrun`` process group if there is one; return this process's DistInfo.

    Backend: NCCL for CUDA devices, gloo for CPU. Without torchrun variables (or with
    WORLD_SIZE=1) nothing is initialised.
    """
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    device = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if device.startswith('cuda'):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo',
                                rank=rank, world_size=world)
    return DistInfo(rank, world, local, device)


def cleanup():
    """Leave the process group (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier():
    """Wait for every process (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def wrap_model(module, info, find_unused_parameters=True, sync_bn=False):
    """DDP-wrap ``module`` when distributed (after optional SyncBN conversion).

    ``find_unused_parameters``: batches without any assigned person skip the DCC and
    keypoint losses, leaving parameters without gradients in that step.
    """
    if not info.distributed:
        return module
    if sync_bn:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [torch.device(info.device).index] if info.device.startswith('cuda') else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                               find_unused_parameters=find_unused_parameters)


def build_sampler(dataset, info, seed, epoch):
    """Shuffling sampler for ``epoch``: a ``DistributedSampler`` (padded to equal shards, each
    rank its own) when distributed, else a seeded random permutation."""
    if info.distributed:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
            drop_last=False)
        sampler.set_epoch(epoch)
        return sampler
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.utils.data.RandomSampler(dataset, generator=generator)


@torch.no_grad()
def sync_norm_buffers(model):
    """Average BatchNorm running statistics over processes (mmengine ``SyncNormHook``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buf in (module.running_mean, module.running_var):
                dist.all_reduce(buf)
                buf.div_(world)


def mean_over_processes(values):
    """Average a dict of floats over processes (for logging); unchanged when single."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return dict(values)
    keys = sorted(values)
    # NCCL reduces CUDA tensors only
    device = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, t.cpu().tolist())}


def unwrap(module):
    """The module inside a DDP wrapper (or ``module`` itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
