"""AdamW parameter groups and the RTMO learning-rate schedule (mmpose 1.3.2, spec section 4.4).

Parameter groups follow mmengine's ``ForceDefaultOptimWrapperConstructor`` with
``norm_decay_mult=0, bias_decay_mult=0, custom_keys={'neck.encoder': lr_mult 0.05}``:

* parameters of norm layers (BatchNorm*, LayerNorm, GroupNorm, InstanceNorm) and every
  parameter *named* ``bias`` get weight decay 0 (``in_proj_bias`` of multi-head attention is
  not named ``bias`` and keeps its decay, as in mmengine);
* parameters whose full name contains ``neck.encoder`` get lr x 0.05 (the norm/bias rule
  still applies to them: ``force_default_settings=True``);
* everything else: base lr, base weight decay.

The schedule is mmpose's chain of five mmengine schedulers (warmup per iteration, the rest
converted to iterations) written as one closed-form function, :func:`lr_at`. ``min_lr`` is an
absolute floor shared by all groups (mmengine's ``eta_min``), so the encoder group, whose base
lr 4e-3 x 0.05 = 2e-4 equals the floor, stays at 2e-4 through the first cosine.
"""
from dataclasses import dataclass
import math

import torch
from torch import nn

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
          nn.modules.instancenorm._InstanceNorm)


def param_groups(model, lr, weight_decay, encoder_lr_mult=0.05, encoder_key='neck.encoder',
                 dcc_lr_mult=1.0):
    """Split ``model``'s trainable parameters into AdamW groups as mmpose does.

    ``dcc_lr_mult`` != 1 (not an mmpose setting) puts ``head.dcc`` in groups of its own at
    lr x dcc_lr_mult: from scratch, at the lr the rest of a small model trains well with, the
    DCC's bin logits blow up and lock onto wrong bins (see ``train_config.tiny_preset``).

    Returns a list of dicts ``{'params', 'lr', 'weight_decay', 'name'}`` (empty groups left
    out), in a fixed order so that optimizer state dicts line up across runs.
    """
    groups = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f'{module_name}.{name}' if module_name else name
            no_decay = isinstance(module, _NORMS) or name == 'bias'
            part = 'encoder' if encoder_key in full else 'base'
            if dcc_lr_mult != 1.0 and full.startswith('head.dcc.'):
                part = 'dcc'
            key = part + ('_no_decay' if no_decay else '')
            mult = {'encoder': encoder_lr_mult, 'dcc': dcc_lr_mult}.get(part, 1.0)
            if key not in groups:
                groups[key] = dict(params=[], name=key, lr=lr * mult,
                                   weight_decay=0.0 if no_decay else weight_decay)
            groups[key]['params'].append(param)
    order = ('base', 'base_no_decay', 'encoder', 'encoder_no_decay', 'dcc', 'dcc_no_decay')
    return [groups[k] for k in order if k in groups]


def build_optimizer(model, lr, weight_decay, encoder_lr_mult=0.05, betas=(0.9, 0.999),
                    dcc_lr_mult=1.0):
    """AdamW over :func:`param_groups` (mmpose: lr 4e-3, weight decay 0.05, default betas)."""
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, encoder_lr_mult,
                                          dcc_lr_mult=dcc_lr_mult),
                             lr=lr, betas=betas, weight_decay=weight_decay)


@dataclass(frozen=True)
class LRSchedule:
    """The RTMO schedule in epochs (0-based); defaults are the 600-epoch COCO/body7 recipe.

    1. quadratic warmup over ``warmup_epochs``: lr = base * ((step + 1) / warmup_steps)^2;
    2. cosine from base to ``min_lr`` over ``cosine1_tmax`` epochs, cut at ``restart_epoch``;
    3. during epoch ``restart_epoch`` the last value times ``restart_factor`` (mmpose's
       ``ConstantLR(factor=2.5)`` "to increase the lr from 2e-4 to 5e-4");
    4. from ``restart_epoch + 1`` a cosine from that value to ``min_lr`` over
       ``cosine2_tmax`` epochs, cut at ``flat_epoch``;
    5. constant from ``flat_epoch`` on.

    CrowdPose (700 epochs): restart 349, cosine1_tmax 350, cosine2_tmax 320, flat 670.
    """

    warmup_epochs: int = 5
    cosine1_tmax: int = 280
    restart_epoch: int = 280
    restart_factor: float = 2.5
    cosine2_tmax: int = 300
    flat_epoch: int = 580
    min_lr: float = 2e-4

    def __post_init__(self):
        """Check the epochs are ordered."""
        if not 0 <= self.warmup_epochs <= self.restart_epoch < self.flat_epoch:
            raise ValueError(f'LRSchedule needs 0 <= warmup_epochs <= restart_epoch < '
                             f'flat_epoch, got {self.warmup_epochs}, {self.restart_epoch}, '
                             f'{self.flat_epoch}')
        if self.cosine1_tmax <= 0 or self.cosine2_tmax <= 0:
            raise ValueError('LRSchedule cosine1_tmax and cosine2_tmax must be positive')


def _cosine(start, floor, t, t_max):
    """mmengine's chained cosine annealing in closed form, ``t`` steps after its begin."""
    return floor + (start - floor) * (1.0 + math.cos(math.pi * t / t_max)) / 2.0


def lr_at(step, base_lr, schedule, iters_per_epoch):
    """Learning rate of training iteration ``step`` (0-based, global) for a group.

    ``base_lr`` is the group's initial lr (lr x group multiplier); ``iters_per_epoch`` the
    number of optimizer steps per epoch. Pure function of its arguments.
    """
    e, s = int(iters_per_epoch), schedule
    warmup = s.warmup_epochs * e
    if step < warmup:
        return base_lr * ((step + 1) / warmup) ** 2
    restart = s.restart_epoch * e
    if step < restart:
        return _cosine(base_lr, s.min_lr, step - warmup, s.cosine1_tmax * e)
    peak = s.restart_factor * _cosine(base_lr, s.min_lr, max(restart - 1 - warmup, 0),
                                      s.cosine1_tmax * e)
    begin2 = restart + e
    if step < begin2:
        return peak
    last = min(step, s.flat_epoch * e - 1)
    return _cosine(peak, s.min_lr, max(last - begin2, 0), s.cosine2_tmax * e)


class RTMOScheduler:
    """Sets each optimizer group's lr to :func:`lr_at` of the current iteration.

    Call :meth:`step` after every ``optimizer.step()`` (as torch schedulers). The state is the
    iteration counter, so a resumed run continues the schedule exactly.
    """

    def __init__(self, optimizer, schedule, iters_per_epoch, last_step=0):
        if iters_per_epoch < 1:
            raise ValueError(f'iters_per_epoch must be >= 1, got {iters_per_epoch}: the '
                             'training set is smaller than one batch')
        self.optimizer = optimizer
        self.schedule = schedule
        self.iters_per_epoch = int(iters_per_epoch)
        for group in optimizer.param_groups:
            group.setdefault('initial_lr', group['lr'])
        self.last_step = int(last_step)
        self._apply()

    def _apply(self):
        for group in self.optimizer.param_groups:
            group['lr'] = lr_at(self.last_step, group['initial_lr'], self.schedule,
                                self.iters_per_epoch)

    def step(self):
        """Advance one iteration and set the new learning rates."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self):
        """The current lr of every group."""
        return [group['lr'] for group in self.optimizer.param_groups]

    def state_dict(self):
        """``{'last_step', 'iters_per_epoch'}``."""
        return {'last_step': self.last_step, 'iters_per_epoch': self.iters_per_epoch}

    def load_state_dict(self, state):
        """Restore the iteration counter (the epoch length must not have changed)."""
        if int(state['iters_per_epoch']) != self.iters_per_epoch:
            raise ValueError(f'the checkpoint was trained with {state["iters_per_epoch"]} '
                             f'iterations per epoch, this run has {self.iters_per_epoch}; '
                             'resume with the same dataset, batch size and world size')
        self.last_step = int(state['last_step'])
        self._apply()
