"""TensorRT engine cache, selection and error paths, tested without TensorRT or a GPU."""
import importlib.util
import json

import pytest

from rtmo_ros.engine.backends import BackendUnavailable
from rtmo_ros.engine.engine_cache import EngineCache, atomic_write, key_digest, make_key

NO_TRT = importlib.util.find_spec('tensorrt') is None


def key(**changes):
    fields = dict(onnx_sha256='ab' * 32, tensorrt_version='10.3.0', gpu_name='Orin',
                  compute_capability=(8, 7), precision='fp16',
                  input_shape=[[1, 3, 640, 640], [1, 3, 640, 640], [8, 3, 640, 640]])
    fields.update(changes)
    return make_key(**fields)


def test_key_covers_every_field():
    base = key()
    assert base['compute_capability'] == '8.7'
    variants = [key(onnx_sha256='cd' * 32), key(tensorrt_version='8.6.2'),
                key(gpu_name='RTX 4090'), key(compute_capability=(8, 9)),
                key(precision='fp32'), key(input_shape=[[1, 3, 416, 416]] * 3)]
    digests = {key_digest(k) for k in variants} | {key_digest(base)}
    assert len(digests) == len(variants) + 1
    assert key_digest(key()) == key_digest(base)  # stable


def test_store_then_lookup_roundtrip(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.lookup('rtmo', key()) is None
    path = cache.store('rtmo', key(), b'engine-bytes')
    assert cache.lookup('rtmo', key()) == path and path.read_bytes() == b'engine-bytes'
    sidecar = json.loads(path.with_suffix('.json').read_text())
    assert sidecar['key'] == key() and len(sidecar['engine_sha256']) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name,
                                                                 path.stem + '.json'])


def test_stale_corrupt_or_mismatched_entries_are_misses(tmp_path):
    cache = EngineCache(tmp_path)
    engine = cache.store('rtmo', key(), b'engine-bytes')
    sidecar = engine.with_suffix('.json')
    engine.write_bytes(b'engine-byteZ')  # same size, other content
    assert cache.lookup('rtmo', key()) is None
    engine = cache.store('rtmo', key(), b'engine-bytes')
    engine.write_bytes(b'engine')  # truncated
    assert cache.lookup('rtmo', key()) is None
    engine = cache.store('rtmo', key(), b'engine-bytes')
    sidecar.write_text('{"format": 1, "key": ')  # corrupt sidecar
    assert cache.lookup('rtmo', key()) is None
    engine = cache.store('rtmo', key(), b'engine-bytes')
    meta = json.loads(sidecar.read_text())
    meta['key']['tensorrt'] = '8.6.1'  # built by another TensorRT, same file name
    sidecar.write_text(json.dumps(meta))
    assert cache.lookup('rtmo', key()) is None
    sidecar.unlink()
    assert cache.lookup('rtmo', key()) is None
    cache.discard('rtmo', key())
    assert not engine.exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / 'e.engine'
    atomic_write(target, b'old')

    with pytest.raises(TypeError):
        atomic_write(target, object())  # fails while writing
    assert target.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['e.engine']


@pytest.mark.skipif(not NO_TRT, reason='tensorrt is installed')
def test_missing_tensorrt_gives_one_message_with_the_fix(parity_dir):
    from rtmo_ros.engine import PoseEstimator
    with pytest.raises(BackendUnavailable) as err:
        PoseEstimator(parity_dir / 'rtmo-s_coco_seed1_mmdeploy.onnx', backend='tensorrt')
    text = str(err.value)
    assert 'python3-libnvinfer' in text and 'pypi.nvidia.com' in text
    assert text.count('.') < 12 and '\n' not in text


def test_no_cuda_device_message():
    from rtmo_ros.engine.backends import cuda_memory
    if cuda_memory.device_count():
        pytest.skip('a CUDA device is present')
    with pytest.raises(BackendUnavailable, match='needs a CUDA device'):
        cuda_memory.open_device(0)


def test_tensorrt_device_and_profile_rules():
    from rtmo_ros.engine.backends.tensorrt_backend import device_index, profile_shapes
    assert device_index(None) == 0 and device_index('cuda:1') == 1
    with pytest.raises(ValueError, match='not a CUDA device.*runs on cuda or cuda:N'):
        device_index('cpu')
    assert profile_shapes([-1, 3, 640, 640]) == [[1, 3, 640, 640], [1, 3, 640, 640],
                                                 [8, 3, 640, 640]]
    assert profile_shapes([1, 3, 416, 416]) == [[1, 3, 416, 416]] * 3
    with pytest.raises(ValueError, match='dynamic spatial size'):
        profile_shapes([1, 3, -1, -1])


def test_onnx_input_shape_of_the_fixture(parity_dir):
    from rtmo_ros.engine.backends.tensorrt_backend import onnx_input_shape
    assert onnx_input_shape(parity_dir / 'rtmo-s_coco_seed1_mmdeploy.onnx') == [-1, 3, 640, 640]


def unwritable_dir(tmp_path):
    """A cache folder below a regular file: writing fails even for root (NotADirectoryError)."""
    (tmp_path / 'file.txt').write_text('not a folder')
    return tmp_path / 'file.txt' / 'engines'


def test_unwritable_cache_store_fails_try_store_warns(tmp_path, caplog):
    cache = EngineCache(unwritable_dir(tmp_path))
    with pytest.raises(OSError):
        cache.store('rtmo', key(), b'engine-bytes')
    assert cache.try_store('rtmo', key(), b'engine-bytes') is None
    assert 'running it from memory' in caplog.text and 'RTMO_HOME' in caplog.text
    assert cache.lookup('rtmo', key()) is None
    cache.discard('rtmo', key())  # nothing to remove, nothing raised
    assert EngineCache(tmp_path / 'ok').try_store('rtmo', key(), b'e').read_bytes() == b'e'


def fake_backend():
    """Just enough of a TensorRTBackend for ``_engine_from_onnx``.

    TensorRT itself cannot run here (not installed, no GPU): deserializing is a stand-in.
    """
    from types import SimpleNamespace
    return SimpleNamespace(trt=SimpleNamespace(__version__='10.3.0'), logger=None,
                           cuda=SimpleNamespace(gpu_name='Orin', capability=(8, 7)),
                           precision='fp16', progress=None,
                           _deserialize=lambda data: ('engine', bytes(data)))


@pytest.mark.parametrize('writable', [True, False])
def test_built_engine_runs_even_when_the_cache_is_read_only(monkeypatch, tmp_path, writable):
    from rtmo_ros.engine.backends import tensorrt_backend as trt_backend
    built = []
    monkeypatch.setattr(trt_backend, 'onnx_input_shape', lambda path: [1, 3, 64, 64])
    monkeypatch.setattr(trt_backend, 'build_engine',
                        lambda *args, **kwargs: built.append(args) or b'built-engine')
    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'graph')
    cache = EngineCache(tmp_path / 'engines' if writable else unwritable_dir(tmp_path))
    backend = fake_backend()
    for _ in range(2):
        engine = trt_backend.TensorRTBackend._engine_from_onnx(backend, onnx, cache)
        assert engine == ('engine', b'built-engine')
    assert len(built) == (1 if writable else 2)  # cached once, or built again each time
