"""ONNX Runtime's execution provider: the ``ort_provider`` choice, its options and fallbacks.

This machine has the CPU build of onnxruntime only (no GPU, no TensorRT). Where a test needs
onnxruntime to *list* the CUDA or TensorRT provider, it replaces ``available_providers`` (a
list of names, nothing else); the sessions are real ONNX Runtime sessions, and their fallback
to the CPU is ONNX Runtime's own behaviour when a listed provider cannot start.
"""
import logging
import os
import pathlib

import pytest

from rtmo_ros.engine import PoseEstimator, zoo
from rtmo_ros.engine.backends import BackendUnavailable, select
from rtmo_ros.engine.backends import onnxruntime_backend as ob

BUNDLED = zoo.bundled_path()
DYNAMIC_BATCH = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'parity' / \
    'rtmo-s_coco_seed1_mmdeploy.onnx'


@pytest.fixture
def gpu_build(monkeypatch):
    """onnxruntime-gpu as it lists itself on a machine with TensorRT (names only)."""
    monkeypatch.setattr(ob, 'available_providers', lambda: ['tensorrt', 'cuda', 'cpu'])


def test_this_machine_lists_only_the_cpu_provider():
    assert ob.available_providers() == ['cpu']
    assert not ob.cuda_provider_available()


@pytest.mark.parametrize('provider, device, precision, words', [
    ('gpu', None, 'fp32', 'ort_provider must be one of auto, cpu, cuda, tensorrt'),
    ('cuda', 'cpu', 'fp32', 'device is cpu'),
    ('tensorrt', 'cpu', 'fp16', 'device is cpu'),
    ('cpu', 'cuda:1', 'fp32', 'contradicts device'),
    ('cuda', None, 'int8', 'int8 is the calibrated CPU graph'),
])
def test_contradictory_choices_are_refused_naming_the_fix(provider, device, precision, words):
    with pytest.raises(ValueError, match=words):
        ob.check_provider(provider, device, precision)


def test_a_provider_onnxruntime_lacks_is_refused_with_the_install_command():
    with pytest.raises(BackendUnavailable, match='pip install onnxruntime-gpu'):
        PoseEstimator(BUNDLED, ort_provider='cuda')
    with pytest.raises(BackendUnavailable, match='libnvinfer'):
        PoseEstimator(BUNDLED, ort_provider='tensorrt')


def test_ort_provider_cpu_runs_and_reports_the_cpu():
    with PoseEstimator(BUNDLED, ort_provider='cpu') as est:
        assert (est.backend, est.ort_provider, est.hardware_id) == ('onnxruntime', 'cpu',
                                                                   'onnxruntime:cpu')


def test_ort_provider_applies_only_to_onnx_on_onnxruntime():
    with pytest.raises(ValueError, match='applies to the onnxruntime backend'):
        select.choose('tensorrt', 'onnx', None, 'cuda')
    with pytest.raises(ValueError, match='applies to the onnxruntime backend'):
        select.choose('auto', 'pth', None, 'cpu')


def test_auto_order_is_tensorrt_then_ort_tensorrt_then_ort_cuda_then_cpu(monkeypatch):
    listed = []
    monkeypatch.setattr(ob, 'available_providers', lambda: listed)
    monkeypatch.setattr(select, 'tensorrt_usable', lambda: (True, 'trt'))
    assert select.choose('auto', 'onnx')[:2] == ('tensorrt', None)
    monkeypatch.setattr(select, 'tensorrt_usable', lambda: (False, 'no trt'))
    listed[:] = ['tensorrt', 'cuda', 'cpu']
    name, device, why = select.choose('auto', 'onnx')
    assert (name, device) == ('onnxruntime', 'cuda') and 'TensorRT provider' in why
    assert ob.resolve_provider('auto', device) == 'tensorrt'
    listed[:] = ['cuda', 'cpu']
    assert ob.resolve_provider('auto', select.choose('auto', 'onnx')[1]) == 'cuda'
    listed[:] = ['cpu']
    assert select.choose('auto', 'onnx')[:2] == ('onnxruntime', 'cpu')
    # an explicit provider skips the tensorrt backend even where it is usable
    monkeypatch.setattr(select, 'tensorrt_usable', lambda: (True, 'trt'))
    assert select.choose('auto', 'onnx', None, 'cpu')[:2] == ('onnxruntime', 'cpu')


def test_tensorrt_provider_options_cache_engines_and_timing_in_the_engine_cache(gpu_build,
                                                                               tmp_path):
    providers = ob.providers_for('cuda:1', 'tensorrt', 'fp16', tmp_path, BUNDLED)
    assert [p if isinstance(p, str) else p[0] for p in providers] == [
        'TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    options = providers[0][1]
    folder = str(tmp_path / 'ort-tensorrt')
    assert options['device_id'] == 1 and providers[1][1] == {'device_id': 1}
    assert options['trt_fp16_enable'] is True
    assert options['trt_engine_cache_enable'] and options['trt_engine_cache_path'] == folder
    assert options['trt_timing_cache_enable'] and options['trt_timing_cache_path'] == folder
    assert os.path.isdir(folder)
    assert options['trt_profile_max_shapes'] == 'input:8x3x320x320'  # the bundled graph
    # takes any batch: the provider builds one engine for batch 1..8, not one per size
    fp32 = ob.providers_for('cuda', 'tensorrt', 'fp32', tmp_path, BUNDLED)[0][1]
    assert fp32['trt_fp16_enable'] is False and fp32['device_id'] == 0


@pytest.mark.skipif(not DYNAMIC_BATCH.is_file(), reason='needs ../shared/parity')
def test_a_dynamic_batch_graph_gets_a_batch_1_to_8_profile():
    profile = ob.batch_profile(DYNAMIC_BATCH)
    assert profile == {'trt_profile_min_shapes': 'input:1x3x640x640',
                       'trt_profile_opt_shapes': 'input:1x3x640x640',
                       'trt_profile_max_shapes': 'input:8x3x640x640'}


def test_a_read_only_cache_leaves_the_provider_uncached_with_a_warning(gpu_build, tmp_path,
                                                                       caplog):
    if os.geteuid() == 0:
        blocker = tmp_path / 'file'  # root writes anywhere: a file where the folder would go
        blocker.write_bytes(b'')
        cache = blocker
    else:
        cache = tmp_path / 'ro'
        cache.mkdir(mode=0o500)
    with caplog.at_level(logging.WARNING):
        options = ob.tensorrt_options(0, 'fp16', cache)
    assert 'trt_engine_cache_enable' not in options and 'trt_timing_cache_path' not in options
    assert 'rebuilds its engine at every start' in caplog.text


def test_a_named_provider_that_falls_back_to_the_cpu_is_an_error(gpu_build):
    # the real CPU build of onnxruntime cannot start CUDA: it falls back to the CPU itself
    with pytest.raises(BackendUnavailable, match='fell back to CPUExecutionProvider'):
        ob.OnnxRuntimeBackend(BUNDLED, device='cuda', provider='cuda')


def test_an_auto_provider_that_falls_back_runs_on_the_cpu_and_says_so(gpu_build, tmp_path,
                                                                     caplog):
    with caplog.at_level(logging.WARNING):
        backend = ob.OnnxRuntimeBackend(BUNDLED, device='cuda', provider='auto',
                                        precision='fp16', cache_dir=tmp_path)
    assert (backend.provider, backend.device, backend.precision) == ('cpu', 'cpu', 'fp32')
    assert 'could not start TensorrtExecutionProvider' in caplog.text
