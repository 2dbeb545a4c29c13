"""ROS-free RTMO inference engine: ``PoseEstimator(model)(image_bgr) -> Poses``.

Importing this package loads numpy and OpenCV only; onnxruntime, tensorrt and torch are
imported when a backend that needs them is created.
"""
from .estimator import PoseEstimator, StageTimes
from .poses import Poses

__all__ = ['PoseEstimator', 'Poses', 'StageTimes']
