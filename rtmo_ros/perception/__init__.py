"""People over time and in 3D, without ROS: tracking, One-Euro smoothing, depth lifting.

``PersonPipeline(PerceptionConfig()).update(poses, stamp_s, depth_m, camera) -> Tracked``.
Importing this package loads numpy, scipy.optimize and OpenCV only (no rclpy, no messages).
"""
from .camera import PinholeCamera
from .depth import DepthConfig, depth_to_metres, lift, torso_indices
from .one_euro import KeypointSmoother
from .pipeline import PerceptionConfig, PersonPipeline, Tracked
from .tracker import Tracker
from .velocity import VelocityEstimator

__all__ = ['DepthConfig', 'KeypointSmoother', 'PerceptionConfig', 'PersonPipeline',
           'PinholeCamera', 'Tracked', 'Tracker', 'VelocityEstimator', 'depth_to_metres',
           'lift', 'torso_indices']
