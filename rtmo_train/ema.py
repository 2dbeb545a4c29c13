"""Exponential moving average of the weights with an annealed momentum (YOLOX / mmpose).

mmpose's RTMO configs use ``ExpMomentumEMA(momentum=2e-4, gamma=2000, update_buffers=True)``
(``mmpose/engine/hooks/ema_hook.py`` on top of mmengine's ``BaseAveragedModel``): the first
update copies the model; update n >= 1 does ``avg = (1 - m_n) * avg + m_n * src`` with
``m_n = (1 - momentum) * exp(-(1 + n) / gamma) + momentum``, so early averages follow the
model closely and the window widens to ~1 / momentum = 5000 steps. With ``update_buffers``
the BatchNorm running statistics are averaged too (integer buffers are copied once, then left
alone, as in mmengine).
"""
import copy
import math

import torch


def ema_momentum(steps, momentum=2e-4, gamma=2000):
    """Momentum of update number ``steps`` (0-based; update 0 is a plain copy)."""
    return (1.0 - momentum) * math.exp(-(1.0 + steps) / gamma) + momentum


class ExpMomentumEMA:
    """Holds ``module``, an eval-mode copy of the model whose weights are the running average.

    Call :meth:`update` with the raw (not DDP-wrapped) model after every optimizer step.
    """

    def __init__(self, model, momentum=2e-4, gamma=2000, update_buffers=True):
        if gamma <= 0:
            raise ValueError(f'EMA gamma must be > 0, got {gamma}')
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = float(momentum)
        self.gamma = float(gamma)
        self.update_buffers = bool(update_buffers)
        self.steps = 0

    def _sources(self, model):
        if self.update_buffers:
            return self.module.state_dict(), model.state_dict()
        return (dict(self.module.named_parameters()), dict(model.named_parameters()))

    @torch.no_grad()
    def update(self, model):
        """Fold the current weights of ``model`` into the average."""
        avg, src = self._sources(model)
        m = ema_momentum(self.steps, self.momentum, self.gamma)
        for key, a in avg.items():
            s = src[key].detach().to(a.device)
            if self.steps == 0:
                a.copy_(s)
            elif a.dtype.is_floating_point:
                a.mul_(1.0 - m).add_(s.to(a.dtype), alpha=m)
        if not self.update_buffers:
            for a, s in zip(self.module.buffers(), model.buffers()):
                a.copy_(s.to(a.device))
        self.steps += 1

    def state_dict(self):
        """``{'module': averaged state dict, 'steps': updates so far}``."""
        return {'module': self.module.state_dict(), 'steps': self.steps}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""
        self.module.load_state_dict(state['module'])
        self.steps = int(state['steps'])
