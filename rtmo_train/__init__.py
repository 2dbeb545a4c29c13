"""rtmo_train: RTMO (mmpose 1.3.2) in plain PyTorch: model, checkpoints, losses, training, export.

Public API: ``load_model(path)`` -> ``RTMO`` in eval mode, ``save_checkpoint(model, path)``,
``ModelConfig``/``PRESETS``/``preset`` and ``build_model(cfg)``. Never imports rclpy.

The names are resolved lazily so that the torch-free parts (``rtmo_train.data.synthetic``,
``rtmo_train.evaluation``) can be used, e.g. by the bag tools, without importing torch.
"""
from rtmo_train.lazy import lazy_getattr

_EXPORTS = {
    'load_model': 'checkpoint', 'save_checkpoint': 'checkpoint',
    'ModelConfig': 'config', 'PRESETS': 'config', 'preset': 'config',
    'RTMO': 'model.rtmo', 'build_model': 'model.rtmo',
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
