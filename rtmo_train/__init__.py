"""rtmo_train: RTMO (mmpose 1.3.2) in plain PyTorch: model, checkpoints, losses, training, export.

Public API: ``load_model(path)`` -> ``RTMO`` in eval mode, ``save_checkpoint(model, path)``,
``ModelConfig``/``PRESETS``/``preset`` and ``build_model(cfg)``. Never imports rclpy.

The names are resolved lazily so that the torch-free parts (``rtmo_train.data.synthetic``,
``rtmo_train.evaluation``) can be used, e.g. by the bag tools, without importing torch.
"""
import importlib

_EXPORTS = {
    'load_model': 'checkpoint', 'save_checkpoint': 'checkpoint',
    'ModelConfig': 'config', 'PRESETS': 'config', 'preset': 'config',
    'RTMO': 'model.rtmo', 'build_model': 'model.rtmo',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
    globals()[name] = value  # cache: later look-ups skip this function
    return value
