"""Imports point one way: engine and perception never pull in rclpy (nor torch, tensorrt)."""
import subprocess
import sys


def modules_after(statement):
    code = f'import sys; {statement}; print(" ".join(sorted(sys.modules)))'
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True).stdout
    return set(out.split())


def test_engine_imports_without_ros_or_gpu_stacks():
    loaded = modules_after('import rtmo_ros.engine')
    assert not {'rclpy', 'torch', 'tensorrt'} & loaded


def test_rtmo_train_never_imports_rclpy():
    loaded = modules_after('import rtmo_train')
    assert 'rclpy' not in loaded


def test_bag_tools_and_synthetic_data_need_no_torch():
    loaded = modules_after('import rtmo_ros.bag_eval, rtmo_ros.demo_bag, rtmo_train.evaluation, '
                           'rtmo_train.data.synthetic')
    assert 'torch' not in loaded


def test_perception_needs_no_ros_messages_nor_torch():
    loaded = modules_after('import rtmo_ros.perception')
    ros = {m for m in loaded if m.split('.')[0] in ('rclpy', 'rtmo_msgs', 'std_msgs',
                                                    'sensor_msgs', 'geometry_msgs')}
    assert not ros and not {'torch', 'tensorrt'} & loaded
