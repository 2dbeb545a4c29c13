"""Load mmpose RTMO checkpoints and this project's own checkpoints; save the latter.

Two formats are read (both with ``torch.load(..., weights_only=True)``):

* **mmpose** (official model-zoo ``.pth`` files): ``{'state_dict': {...}, 'meta': ...}``.
  ``state_dict`` already holds the EMA weights (mmengine's EMAHook swaps them in before
  saving); ``ema_state_dict`` (the raw weights), if present, is ignored, and
  ``data_preprocessor.*`` keys are dropped. Variant, keypoint count and input size are
  detected from the weights.
* **rtmo_train** (written by ``save_checkpoint``): a dict with
  ``format`` = ``'rtmo_train/1'``, ``config`` = ``ModelConfig.to_dict()`` (variant, deepen,
  widen, input_size [w, h], num_keypoints, neck_channels), ``model`` = the state dict (same
  keys as mmpose), plus any extra entries the caller passed (optimizer state, epoch, ...).
  Files written before ``neck_channels`` existed get it from the weights.
"""
from dataclasses import replace
import os
import pathlib
import tempfile

import torch

from .config import PRESETS, ModelConfig, preset
from .model.rtmo import RTMO

FORMAT = 'rtmo_train/1'
_STEM_KEY = 'backbone.stem.conv.conv.weight'
_VIS_KEY = 'head.head_module.out_kpt_vis.0.weight'
_NECK_KEY = 'neck.input_proj.0.conv.weight'  # (neck_channels, C3, 1, 1)


def _read(path):
    """torch.load ``path`` safely; errors name the path."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:
        raise ValueError(f'{path} is not a readable PyTorch checkpoint ({exc.__class__.__name__}'
                         f': {str(exc).splitlines()[0] if str(exc) else ""}); pass an mmpose '
                         'RTMO .pth or a file written by rtmo_train.save_checkpoint') from exc


def detect_config(state_dict, num_keypoints=None, input_size=None, variant=None):
    """Infer the ``ModelConfig`` of an mmpose-layout RTMO state dict.

    Width comes from the stem's output channels (64 * widen), depth from the number of
    bottlenecks in backbone stage 1 (3 * deepen), K from ``out_kpt_vis``, the neck width from
    ``neck.input_proj.0``. Explicit arguments override what is detected.
    """
    if _STEM_KEY not in state_dict or _VIS_KEY not in state_dict:
        raise ValueError(f'not an RTMO state dict: keys {_STEM_KEY!r} and {_VIS_KEY!r} missing')
    if variant is None:
        stem = state_dict[_STEM_KEY].shape[0]
        blocks = len({k.split('.')[4] for k in state_dict
                      if k.startswith('backbone.stage1.1.blocks.')})
        matches = [name for name, cfg in PRESETS.items()
                   if cfg.stem_channels == stem and cfg.stage_blocks[0] == blocks]
        if not matches:
            raise ValueError(f'unknown RTMO variant: stem has {stem} channels and stage1 '
                             f'{blocks} blocks, which match none of {sorted(PRESETS)}')
        variant = matches[0]
    k = num_keypoints or state_dict[_VIS_KEY].shape[0]
    cfg = preset(variant, num_keypoints=k, input_size=input_size)
    neck = neck_channels_of(state_dict)
    return cfg if neck is None or neck == cfg.neck_channels else replace(cfg, neck_channels=neck)


def neck_channels_of(state_dict):
    """The HybridEncoder width of an RTMO state dict, or None if it has no neck weights."""
    weight = state_dict.get(_NECK_KEY)
    return None if weight is None else int(weight.shape[0])


def _check_keys(model, state_dict, path):
    """Raise one ValueError listing missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
                  f'{tuple(expected[k].shape)}'
                  for k in sorted(set(expected) & set(state_dict))
                  if tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    problems = []
    for title, items in (('missing keys', missing), ('unexpected keys', unexpected),
                         ('shape mismatches', mismatched)):
        if items:
            shown = ', '.join(items[:20]) + (f', ... ({len(items)} in all)'
                                             if len(items) > 20 else '')
            problems.append(f'{title}: {shown}')
    if problems:
        raise ValueError(f'{path} does not fit RTMO-{model.cfg.variant} '
                         f'(K={model.cfg.num_keypoints}): ' + '; '.join(problems))


def load_model(path, variant=None, num_keypoints=None, input_size=None, device='cpu'):
    """Load an RTMO checkpoint (mmpose or rtmo_train format) into a model in eval mode.

    Args:
        path: the ``.pth`` file.
        variant: 't', 's', 'm' or 'l' to skip detection (mmpose format only).
        num_keypoints: override the detected keypoint count.
        input_size: (width, height) override; default 416x416 for t, else 640x640 (or the
            saved config for rtmo_train checkpoints).
        device: torch device for the model.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a checkpoint, not RTMO, or keys/shapes that do not fit (one message
            listing all of them).
    """
    ckpt = _read(path)
    if not isinstance(ckpt, dict):
        raise ValueError(f'{path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    if 'config' in ckpt and 'model' in ckpt:
        state_dict = ckpt['model']
        saved = dict(ckpt['config'])
        if 'neck_channels' not in saved and neck_channels_of(state_dict):
            saved['neck_channels'] = neck_channels_of(state_dict)  # file older than the field
        cfg = ModelConfig.from_dict(saved)
        overrides = {k: v for k, v in (('num_keypoints', num_keypoints),
                                       ('input_size', input_size)) if v}
        if overrides:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    elif 'state_dict' in ckpt:
        state_dict = {k: v for k, v in ckpt['state_dict'].items()
                      if not k.startswith('data_preprocessor.')}
        try:
            cfg = detect_config(state_dict, num_keypoints, input_size, variant)
        except ValueError as exc:
            raise ValueError(f'{path}: {exc}') from exc
    else:
        raise ValueError(f'{path} has neither "state_dict" (mmpose) nor "config"+"model" '
                         f'(rtmo_train) entries; top-level keys: {sorted(ckpt)[:10]}')
    model = RTMO(cfg)
    _check_keys(model, state_dict, path)
    model.load_state_dict(state_dict)
    return model.to(device).eval()


def save_checkpoint(model, path, **extra):
    """Write ``model`` in the rtmo_train format (see module docstring), atomically.

    ``extra`` entries (e.g. ``epoch=3``, ``optimizer=opt.state_dict()``) are stored beside
    ``format``, ``config`` and ``model``; they must be ``weights_only``-loadable.
    """
    reserved = {'format', 'config', 'model'} & set(extra)
    if reserved:
        raise ValueError(f'save_checkpoint: {sorted(reserved)} are reserved entry names')
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(format=FORMAT, config=model.cfg.to_dict(), model=model.state_dict(), **extra)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(data, f)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file
    except BaseException:
        os.unlink(tmp)
        raise
    return path
