"""The engine is ROS-free and imports no heavy stack until a backend needs it."""
import subprocess
import sys


def test_engine_import_pulls_no_ros_torch_or_tensorrt():
    code = ('import sys; from rtmo_ros.engine import PoseEstimator; '
            'import rtmo_ros.engine.cli, rtmo_ros.engine.zoo, rtmo_ros.engine.download, '
            'rtmo_ros.engine.engine_cache, rtmo_ros.engine.backends.select; '
            'print(" ".join(sorted(sys.modules)))')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True).stdout.split()
    assert 'rtmo_ros.engine.estimator' in out
    for heavy in ('rclpy', 'torch', 'tensorrt', 'onnxruntime', 'openvino'):
        assert heavy not in out, heavy
