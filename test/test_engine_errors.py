"""Each user mistake gives one clear error naming the value and the fix."""
import importlib.util

import numpy as np
import pytest

from rtmo_ros.engine import PoseEstimator
from rtmo_ros.engine.backends import BackendUnavailable
from rtmo_ros.engine.backends.onnxruntime_backend import cuda_provider_available
from rtmo_ros.engine.backends.select import choose, model_kind


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        PoseEstimator(tmp_path / 'nowhere.onnx')


def test_corrupt_onnx_file(tmp_path):
    bad = tmp_path / 'broken.onnx'
    bad.write_bytes(b'this is not a protobuf' * 10)
    with pytest.raises(ValueError, match='not a loadable ONNX model'):
        PoseEstimator(bad, backend='onnxruntime')


def test_unknown_zoo_name_lists_the_names():
    with pytest.raises(ValueError, match='rtmo-s-body7') as err:
        PoseEstimator('rtmo-xxl')
    assert 'rtmo-xxl' in str(err.value)


def test_unknown_backend_and_mismatched_file_kind():
    with pytest.raises(ValueError, match='unknown backend .*openvino'):  # names the choices
        choose('tflite', 'onnx')
    with pytest.raises(ValueError, match='cannot run a .pth'):
        choose('onnxruntime', 'pth')
    with pytest.raises(ValueError, match='the openvino backend cannot run a .engine'):
        choose('openvino', 'engine')
    with pytest.raises(ValueError, match='cannot tell the model type'):
        model_kind('model.tflite')


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match='precision'):
        PoseEstimator(tmp_path / 'x.onnx', precision='int4')


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None or cuda_provider_available(),
                    reason='a GPU stack is installed: auto would pick it')
def test_auto_on_cpu_only_machine_picks_onnxruntime_cpu():
    name, device, why = choose('auto', 'onnx')
    assert (name, device) == ('onnxruntime', 'cpu')
    assert 'tensorrt' in why
    assert choose('auto', 'engine')[0] == 'tensorrt'
    assert choose('auto', 'pth')[0] == 'torch'


def test_cuda_device_without_cuda_onnxruntime():
    from rtmo_ros.engine.backends.onnxruntime_backend import providers_for
    with pytest.raises(BackendUnavailable, match='onnxruntime-gpu'):
        providers_for('cuda:0')
    assert providers_for(None) == ['CPUExecutionProvider']
    with pytest.raises(ValueError, match='unknown device'):
        providers_for('tpu')


def test_image_check_runs_before_inference():
    from rtmo_ros.engine.preprocess import check_image
    with pytest.raises(ValueError, match='empty'):
        check_image(np.zeros((0, 5, 3), np.uint8))
