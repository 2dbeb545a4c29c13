"""rtmo_train: RTMO (mmpose 1.3.2) in plain PyTorch: model, checkpoints, ONNX export.

Public API: ``load_model(path)`` -> ``RTMO`` in eval mode, ``save_checkpoint(model, path)``,
``ModelConfig``/``PRESETS``/``preset`` and ``build_model(cfg)``. Never imports rclpy.
"""
from .checkpoint import load_model, save_checkpoint
from .config import PRESETS, ModelConfig, preset
from .model.rtmo import RTMO, build_model

__all__ = ['build_model', 'load_model', 'ModelConfig', 'preset', 'PRESETS', 'RTMO',
           'save_checkpoint']
