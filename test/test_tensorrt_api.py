"""TensorRT backend against the API surface of TensorRT 8.6, 10.x and 11.x.

No GPU and no TensorRT exist here (see ../shared/notes/tensorrt.md), so the ``tensorrt`` and
cuda-python modules below are test doubles written from NVIDIA's Python API of each version:
8.6 has the binding-index API plus named tensors, 10.x named tensors only (``BuilderFlag.FP16``
still there), 11.x no ``BuilderFlag.FP16`` and no ``EXPLICIT_BATCH``. They pin which calls the
backend makes on which version; they prove nothing about TensorRT itself. The fp16 graph
conversion for TensorRT 11 is tested for real, with ONNX Runtime on CPU.
"""
import logging
import pathlib
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from rtmo_ros.engine.backends import BackendUnavailable, cuda_memory
from rtmo_ros.engine.backends import tensorrt_backend as trt_backend
from rtmo_ros.engine.backends.tensorrt_io import BindingIO, NamedIO, _Buffer, make_io
from rtmo_ros.engine.engine_cache import EngineCache

BUNDLED = pathlib.Path(trt_backend.__file__).parents[2] / 'models' / 'rtmo_tiny_synthetic.onnx'
VERSIONS = ('8.6.1', '10.3.0', '11.4.0')


# ---------------------------------------------------------------- test double of tensorrt
class Engine:
    """A deserialized engine: input 'input' (B, 3, 64, 64), outputs dets and keypoints."""

    def __init__(self, trt, input_dtype=np.float32, batch=-1, max_batch=8, bindings=None):
        self.trt, self.input_dtype, self.max_batch = trt, np.dtype(input_dtype), max_batch
        self.shapes = {'input': (batch, 3, 64, 64), 'dets': (batch, -1, 5),
                       'keypoints': (batch, -1, 17, 3)}
        self.names = list(self.shapes)
        named = trt.major >= 8.5 if bindings is None else not bindings
        if named:  # 8.5+ (8.6 keeps the binding API too, 10 and 11 have only this)
            self.num_io_tensors = 3
        if trt.major < 10 or bindings:
            self.num_bindings = 3

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name == 'input' else self.trt.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        shape = self.shapes[name]
        return (shape[0], 3, 64, 64) if name == 'input' else shape[:2] + (17, 3)[:len(shape) - 2]

    def get_tensor_profile_shape(self, name, profile):
        return [(1, 3, 64, 64), (1, 3, 64, 64), (self.max_batch, 3, 64, 64)]

    def get_tensor_dtype(self, name):
        return self.input_dtype if name == 'input' else np.dtype(np.float32)

    # binding API (8.6 and older)
    def get_binding_name(self, i):
        return self.names[i]

    def binding_is_input(self, i):
        return i == 0

    def get_binding_shape(self, i):
        return self.get_tensor_shape(self.names[i])

    def get_profile_shape(self, profile, i):
        return self.get_tensor_profile_shape(self.names[i], profile)

    def get_binding_dtype(self, i):
        return self.get_tensor_dtype(self.names[i])

    def create_execution_context(self):
        return Context(self)


class Context:
    """Records set_input_shape / execute calls with the thread that made them."""

    def __init__(self, engine):
        self.engine, self.calls, self.allocators = engine, [], {}

    def set_output_allocator(self, name, allocator):
        self.allocators[name] = allocator

    def set_input_shape(self, name, shape):
        self.calls.append(('set_input_shape', tuple(shape)))
        self.batch = shape[0]
        return shape[0] <= self.engine.max_batch  # TensorRT returns False above the profile

    set_binding_shape = set_input_shape

    def get_binding_shape(self, i):
        return (self.batch, 2) + ((5,) if i == 1 else (17, 3))

    def set_tensor_address(self, name, ptr):
        self.calls.append(('set_tensor_address', name, ptr))

    def get_tensor_shape(self, name):
        return (self.batch, 2) + ((5,) if name == 'dets' else (17, 3))

    def execute_async_v3(self, stream):
        self.calls.append(('execute_async_v3', stream, threading.get_ident()))
        for name, alloc in self.allocators.items():
            shape = self.get_tensor_shape(name)
            alloc.reallocate_output(name, None, 4 * int(np.prod(shape)), 256)
            alloc.notify_shape(name, shape)
        return True

    def execute_async_v2(self, bindings, stream):
        self.calls.append(('execute_async_v2', tuple(bindings), stream))
        return True


class Network:
    """conv -> scale -> head (conv) -> decode -> topk -> gather; shape_of is integer."""

    def __init__(self, trt):
        self.layers = network_layers(trt.LayerType, trt)
        self.num_layers = len(self.layers)

    def get_input(self, i):
        return SimpleNamespace(name='input')

    def get_layer(self, i):
        return self.layers[i]


class TimingCache:
    def __init__(self, data):
        self.data = data

    def serialize(self):
        return self.data + b'+measured'


class TimingConfig:
    """IBuilderConfig's timing-cache calls (the same in 8.6, 10 and 11), logged in ``log``."""

    log = []

    def create_timing_cache(self, data):
        self.log.append(('create_timing_cache', bytes(data)))
        return None if data == b'corrupt' else TimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.log.append(('set_timing_cache', cache.data, ignore_mismatch))
        self.timing = cache

    def get_timing_cache(self):
        return self.timing


def fake_tensorrt(version, built=b'serialized-engine', deserialize=True):
    """A ``tensorrt`` module of ``version`` ('8.6.1' | '10.3.0' | '11.4.0'); ``trt.calls``
    lists the builder calls made."""
    major = int(version.split('.')[0]) + (0.6 if version.startswith('8.6') else 0)
    calls = []

    def record(name):
        return lambda *args: calls.append((name,) + args)

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class IOutputAllocator:
        def __init__(self):
            pass

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(('parse_from_file', path, pathlib.Path(path).read_bytes()))
            return True

    class Config(TimingConfig):
        log = calls
        set_memory_pool_limit = staticmethod(record('set_memory_pool_limit'))
        set_flag = staticmethod(record('set_flag'))
        add_optimization_profile = staticmethod(record('add_optimization_profile'))


    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(('create_network', flags))
            return Network(trt)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return SimpleNamespace(set_shape=record('set_shape'))

        def build_serialized_network(self, network, config):
            calls.append(('build_serialized_network',))
            return built

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            calls.append(('deserialize_cuda_engine', bytes(data)))
            return Engine(trt) if deserialize else None

    flags = {'TF32': 7} if major >= 11 else {'FP16': 0, 'INT8': 1, 'TF32': 7,
                                             'PREFER_PRECISION_CONSTRAINTS': 12}
    LayerType = SimpleNamespace(CONVOLUTION='CONVOLUTION', ELEMENTWISE='ELEMENTWISE',
                                TOPK='TOPK', GATHER='GATHER', SHAPE='SHAPE',
                                MATRIX_MULTIPLY='MATRIX_MULTIPLY', NMS='NMS')

    net_flags = {'STRONGLY_TYPED': 1} if major >= 10 else {}
    if major < 11:
        net_flags['EXPLICIT_BATCH'] = 0
    trt = SimpleNamespace(
        __version__=version, major=major, calls=calls, Logger=Logger, Builder=Builder,
        OnnxParser=Parser, Runtime=Runtime, IOutputAllocator=IOutputAllocator,
        BuilderFlag=SimpleNamespace(**flags),
        NetworkDefinitionCreationFlag=SimpleNamespace(**net_flags),
        MemoryPoolType=SimpleNamespace(WORKSPACE=0),
        TensorIOMode=SimpleNamespace(INPUT='INPUT', OUTPUT='OUTPUT'), nptype=np.dtype,
        LayerType=LayerType, float32='float32', int32='int32')
    if major >= 10:  # IProgressMonitor and IBuilderConfig.progress_monitor arrived in 10.0
        class IProgressMonitor:
            def __init__(self):
                pass

        trt.IProgressMonitor = IProgressMonitor
        Config.progress_monitor = None
    return trt


class Layer:
    """An ILayer: type, input / output tensors, precision and output types as set."""

    def __init__(self, name, kind, inputs, outputs):
        self.name, self.type, self.inputs, self.outputs = name, kind, inputs, outputs
        self.num_inputs, self.num_outputs = len(inputs), len(outputs)
        self.precision, self.output_types = None, {}

    def get_input(self, j):
        return self.inputs[j]

    def get_output(self, j):
        return self.outputs[j]

    def set_output_type(self, j, dtype):
        self.output_types[j] = dtype


def network_layers(kind, trt):
    def tensor(name, float_=True):
        return SimpleNamespace(name=name, dtype=trt.float32 if float_ else trt.int32)

    x, f, h, d = tensor('input'), tensor('f'), tensor('head'), tensor('decoded')
    shape, scores, idx, picked = tensor('shape', False), tensor('s'), tensor('i', False), \
        tensor('picked')
    return [Layer('backbone', kind.CONVOLUTION, [x], [f]),
            Layer('shape_of', kind.SHAPE, [f], [shape]),
            Layer('scale', kind.ELEMENTWISE, [f, f], [tensor('f2')]),
            Layer('head', kind.CONVOLUTION, [tensor('f2')], [h]),
            Layer('decode', kind.ELEMENTWISE, [h, h], [d]),
            Layer('topk', kind.TOPK, [d], [scores, idx]),
            Layer('gather', kind.GATHER, [d, idx], [picked])]


# ---------------------------------------------------------------- test double of cuda-python
class Stream:
    """cuda-bindings' cudaStream_t: ``getPtr()``; ``int()`` deprecated in 13."""

    def getPtr(self):
        return 0xBEEF

    def __int__(self):
        raise AssertionError('int(cudaStream_t) is deprecated in cuda-bindings 13')


def fake_cudart(devices=2, error=None, driver=12060, runtime=13000):
    """cuda.bindings.runtime: cudaSetDevice calls are recorded with their thread."""
    set_device = []
    ok = SimpleNamespace(name='cudaSuccess', __int__=None)
    ok = 0

    class Error(int):
        name = error

    def count():
        return (Error(100), 0) if error else (ok, devices)

    pointers = iter(range(0x1000, 0x100000, 0x100))
    return SimpleNamespace(
        set_device=set_device,
        cudaGetDeviceCount=count,
        cudaDriverGetVersion=lambda: (ok, driver),
        cudaRuntimeGetVersion=lambda: (ok, runtime),
        cudaSetDevice=lambda i: set_device.append((threading.get_ident(), i)) or (ok,),
        cudaGetDeviceProperties=lambda i: (ok, SimpleNamespace(name=b'Orin\0', major=8,
                                                               minor=7)),
        cudaStreamCreate=lambda: (ok, Stream()),
        cudaMalloc=lambda n: (ok, next(pointers)),
        cudaFree=lambda p: (ok,),
        cudaMemcpyAsync=lambda *a: (ok,),
        cudaStreamSynchronize=lambda s: (ok,),
        cudaStreamDestroy=lambda s: (ok,),
        cudaMemcpyKind=SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2))


def build(trt, precision='fp16', path=BUNDLED):
    return trt_backend.build_engine(trt, None, path, precision, [[1, 3, 320, 320]] * 3)


def names(calls):
    return [c[0] for c in calls]


# ---------------------------------------------------------------- build API per version
@pytest.mark.parametrize('version', VERSIONS)
def test_build_calls_per_version(version, tmp_path):
    """(test double) 8.6: EXPLICIT_BATCH, FP16 flag, no progress monitor; 10: flags 0, FP16
    flag, progress monitor; 11: flags 0, no FP16 flag (strongly typed), progress monitor."""
    trt = fake_tensorrt(version)
    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'graph')
    assert build(trt, path=onnx) == b'serialized-engine'
    assert ('create_network', 1 if version.startswith('8') else 0) in trt.calls
    assert (('set_flag', 0) in trt.calls) == (not version.startswith('11'))
    assert names(trt.calls) == ['create_network', 'parse_from_file', 'set_memory_pool_limit'] + \
        ['set_flag'] * 2 * (not version.startswith('11')) + \
        ['set_shape', 'add_optimization_profile', 'create_timing_cache', 'set_timing_cache',
         'build_serialized_network']
    assert trt_backend.has_fp16_flag(trt) == (not version.startswith('11'))
    trt = fake_tensorrt(version)
    build(trt, precision='fp32', path=onnx)
    assert 'set_flag' not in names(trt.calls)


def backend_for(trt, precision='fp16'):
    """Just enough of a TensorRTBackend for ``_engine_from_onnx``."""
    return SimpleNamespace(trt=trt, logger=None, precision=precision, progress=print,
                           cuda=SimpleNamespace(gpu_name='Orin', capability=(8, 7)),
                           _deserialize=trt.Runtime(None).deserialize_cuda_engine)


@pytest.mark.parametrize('version', VERSIONS)
def test_fp16_build_input_per_version(version, tmp_path):
    """(test double) 8.6/10 parse the ONNX file as is and set FP16; 11 parses the converted
    fp16 graph, and the cache key follows the converted graph (a second start hits it)."""
    pytest.importorskip('onnxconverter_common')
    onnx = pytest.importorskip('onnx')
    trt = fake_tensorrt(version)
    cache = EngineCache(tmp_path / 'engines')
    trt_backend.TensorRTBackend._engine_from_onnx(backend_for(trt), BUNDLED, cache)
    parsed = next(c for c in trt.calls if c[0] == 'parse_from_file')
    graph = onnx.load_from_string(parsed[2])
    fp16 = [i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    if version.startswith('11'):
        assert pathlib.Path(parsed[1]) != BUNDLED and len(fp16) > 50
        assert not pathlib.Path(parsed[1]).exists()  # a temporary file
    else:
        assert pathlib.Path(parsed[1]) == BUNDLED and not fp16
    entries = list((tmp_path / 'engines').glob('*.json'))
    assert len(entries) == 1
    trt.calls.clear()
    trt_backend.TensorRTBackend._engine_from_onnx(backend_for(trt), BUNDLED, cache)
    assert 'build_serialized_network' not in names(trt.calls)  # cache hit


def test_engine_not_deserializing_after_a_fresh_build_raises(monkeypatch, tmp_path):
    """(test double) the engine read back right after building is checked like cached ones."""
    monkeypatch.setattr(trt_backend, 'onnx_input_shape', lambda path: [1, 3, 64, 64])
    trt = fake_tensorrt('10.3.0', deserialize=False)
    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'graph')
    backend = backend_for(trt, precision='fp32')
    with pytest.raises(RuntimeError, match='built an engine from .* cannot deserialize'):
        trt_backend.TensorRTBackend._engine_from_onnx(
            backend, onnx, EngineCache(tmp_path / 'engines'))


def test_missing_converter_names_the_fix(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_converter(name, *args, **kwargs):
        if name.startswith('onnxconverter_common'):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_converter)
    with pytest.raises(BackendUnavailable, match='pip install onnxconverter-common'):
        trt_backend.fp16_graph(BUNDLED, '11.4.0')


# ---------------------------------------------------------------- engine I/O
class Memory:
    """A CUDA memory stand-in recording host-to-device copies."""

    stream_handle = 7

    def __init__(self):
        self.copies, self.pointers = [], iter(range(0x1000, 0x100000, 0x100))

    def alloc(self, nbytes):
        return next(self.pointers)

    def free(self, ptr):
        pass

    def h2d(self, ptr, array):
        self.copies.append(array)

    def d2h(self, array, ptr):
        array[...] = 0

    def sync(self):
        pass


@pytest.mark.parametrize('version', VERSIONS)
def test_named_io_on_every_version_casts_to_the_input_dtype(version):
    """(test double) 8.6 has both APIs: the named tensors are used; an fp16-input engine
    (a user's .engine) gets fp16."""
    trt = fake_tensorrt(version)
    for dtype in (np.float32, np.float16):
        engine = Engine(trt, input_dtype=dtype)
        memory = Memory()
        io = make_io(trt, engine, engine.create_execution_context(), memory)
        assert isinstance(io, NamedIO) and io.max_batch == 8
        dets, kpts = io.run(np.ones((2, 3, 64, 64), np.float32))
        assert memory.copies[0].dtype == dtype and memory.copies[0].flags.c_contiguous
        assert dets.shape == (2, 2, 5) and kpts.shape == (2, 2, 17, 3)
        assert dets.dtype == kpts.dtype == np.float32


@pytest.mark.parametrize('bindings', [False, True])
def test_batch_above_the_profile_names_batch_and_maximum(bindings):
    """(test double) set_input_shape / set_binding_shape return False above the profile's max."""
    trt = fake_tensorrt('8.6.1')
    engine = Engine(trt, max_batch=4, bindings=bindings)
    io = make_io(trt, engine, engine.create_execution_context(), Memory())
    assert isinstance(io, BindingIO if bindings else NamedIO)
    with pytest.raises(ValueError, match=r'batch 6 is above .* maximum 4'):
        io.run(np.zeros((6, 3, 64, 64), np.float32))
    assert not [c for c in io.context.calls if c[0].startswith('execute')]


def test_binding_io_casts_and_runs():
    """(test double) the binding API of TensorRT < 8.5, fp16 input."""
    trt = fake_tensorrt('8.6.1')
    engine = Engine(trt, input_dtype=np.float16, bindings=True)
    memory = Memory()
    io = make_io(trt, engine, engine.create_execution_context(), memory)
    dets, kpts = io.run(np.zeros((1, 3, 64, 64), np.float32))
    assert memory.copies[0].dtype == np.float16 and dets.shape == (1, 2, 5)


def test_buffer_of_zero_bytes_has_a_pointer():
    buffer = _Buffer(Memory())
    assert buffer.ensure(0) is not None
    first = buffer.ensure(0)
    assert buffer.ensure(0) == first  # not reallocated


# ---------------------------------------------------------------- CUDA device per thread
def test_infer_selects_the_device_in_the_worker_thread(monkeypatch, tmp_path):
    """(test double) created in one thread (configure), run in another (the node's worker):
    cudaSetDevice(1) must happen in the worker, before the engine runs."""
    rt = fake_cudart(devices=2)
    monkeypatch.setattr(cuda_memory, '_cudart', lambda: rt)
    trt = fake_tensorrt('10.3.0')
    monkeypatch.setattr(trt_backend, 'import_tensorrt', lambda: trt)
    engine_file = tmp_path / 'm.engine'
    engine_file.write_bytes(b'engine')
    backend = trt_backend.TensorRTBackend(engine_file, device='cuda:1')
    assert backend.cuda.stream_handle == 0xBEEF  # getPtr(), not int()
    results = []
    worker = threading.Thread(target=lambda: results.append(
        backend.infer(np.zeros((1, 3, 64, 64), np.float32))))
    worker.start()
    worker.join()
    assert len(results[0]) == 1
    assert (worker.ident, 1) in rt.set_device
    execute = next(c for c in backend.context.calls if c[0] == 'execute_async_v3')
    assert execute[1] == 0xBEEF and execute[2] == worker.ident
    backend.close()


def test_old_cudart_stream_is_an_int():
    class OldStream:
        def __int__(self):
            return 42

    assert cuda_memory.stream_pointer(OldStream()) == 42
    assert cuda_memory.stream_pointer(Stream()) == 0xBEEF


def test_torch_memory_selects_its_device_in_the_calling_thread(monkeypatch):
    """(test double of torch.cuda) the torch-buffer path selects the device too."""
    calls = []
    cuda = SimpleNamespace(set_device=lambda i: calls.append((threading.get_ident(), i)),
                           get_device_name=lambda d: 'Orin',
                           get_device_capability=lambda d: (8, 7),
                           Stream=lambda d: SimpleNamespace(cuda_stream=5))
    torch = SimpleNamespace(cuda=cuda, device=lambda kind, i: (kind, i))
    monkeypatch.setitem(__import__('sys').modules, 'torch', torch)
    memory = cuda_memory.TorchMemory(1)
    worker = threading.Thread(target=memory.select)
    worker.start()
    worker.join()
    assert (worker.ident, 1) in calls and memory.stream_handle == 5


# ---------------------------------------------------------------- cuda-python versions
def test_cuda_python_13_on_a_cuda_12_driver_names_error_and_pin(monkeypatch):
    """(test double) cuda-python 13 on JetPack 6: the message names the error, both CUDA
    versions and the pin; without torch it is BackendUnavailable."""
    rt = fake_cudart(error='cudaErrorInsufficientDriver', driver=12060, runtime=13000)
    monkeypatch.setattr(cuda_memory, '_cudart', lambda: rt)
    monkeypatch.setattr(cuda_memory, '_torch_device_count', lambda: 0)
    with pytest.raises(BackendUnavailable) as err:
        cuda_memory.open_device(0)
    text = str(err.value)
    for part in ('cudaErrorInsufficientDriver', 'driver supports CUDA 12.6',
                 'built for CUDA 13.0', "pip install 'cuda-python<13'"):
        assert part in text
    assert 'no CUDA device is visible' not in text and '\n' not in text
    assert cuda_memory.device_count() == 0


def test_cuda_python_error_falls_back_to_torch_buffers(monkeypatch, caplog):
    """(test double) torch sees the device: its buffers are used, the warning names the error."""
    rt = fake_cudart(error='cudaErrorInsufficientDriver')
    monkeypatch.setattr(cuda_memory, '_cudart', lambda: rt)
    monkeypatch.setattr(cuda_memory, '_torch_device_count', lambda: 1)
    monkeypatch.setattr(cuda_memory, 'TorchMemory', lambda index: ('torch', index))
    with caplog.at_level(logging.WARNING):
        assert cuda_memory.open_device(0) == ('torch', 0)
    assert 'cudaErrorInsufficientDriver' in caplog.text and 'torch' in caplog.text
    assert cuda_memory.device_count() == 1


def test_missing_device_index(monkeypatch):
    monkeypatch.setattr(cuda_memory, '_cudart', lambda: fake_cudart(devices=1))
    monkeypatch.setattr(cuda_memory, '_torch_device_count', lambda: 0)
    with pytest.raises(BackendUnavailable, match=r'CUDA device 1 does not exist \(1 visible\)'):
        cuda_memory.open_device(1)


# ---------------------------------------------------------------- fp16 graph, for real
def test_fp16_graph_runs_and_stays_within_a_pixel_of_fp32():
    """The TensorRT 11 fp16 graph of the bundled model, run by ONNX Runtime on CPU on a
    rendered frame: fp32 inputs/outputs, fp16 weights, the tail after the head fp32, and the
    keypoints within 1 px of the fp32 graph's."""
    pytest.importorskip('onnxconverter_common')
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    from rtmo_ros.engine.preprocess import letterbox_image
    from rtmo_train.data.synthetic import render_sequence

    data = trt_backend.fp16_graph(BUNDLED)
    model = onnx.load_from_string(data)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
               for o in list(model.graph.input) + list(model.graph.output))
    kept = set(trt_backend.fp32_node_names(onnx.load(BUNDLED).graph))
    ops = {n.op_type for n in model.graph.node if n.name in kept}
    assert {'NonMaxSuppression', 'TopK', 'GatherElements', 'Exp'} <= ops
    def types(graph):
        inferred = onnx.shape_inference.infer_shapes(graph).graph
        return {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}

    original = onnx.load(BUNDLED)
    before, after = types(original), types(model)
    converted = {n.name: n for n in model.graph.node}
    pairs = [(old, new) for n in original.graph.node if n.name in kept
             for old, new in zip(n.output, converted[n.name].output)
             if before.get(old) == onnx.TensorProto.FLOAT]
    assert len(pairs) > 50
    for old, new in pairs:  # the kept nodes compute in fp32 (what was float stays float)
        assert after.get(new, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT, old

    image = [frame for frame, _ in render_sequence(3, 5)][-1]
    x = letterbox_image(image, (320, 320))[0][None]
    sessions = [ort.InferenceSession(g, providers=['CPUExecutionProvider'])
                for g in (str(BUNDLED), data)]
    (d32, k32), (d16, k16) = [s.run(None, {'input': x}) for s in sessions]
    assert d16.dtype == k16.dtype == np.float32
    people = int((d32[0, :, 4] > 0.3).sum())
    assert people >= 1 and int((d16[0, :, 4] > 0.3).sum()) == people
    assert np.abs(k32[0, :people, :, :2] - k16[0, :people, :, :2]).max() < 1.0
    assert np.abs(d32[0, :people, :4] - d16[0, :people, :4]).max() < 1.0


def test_cuda_bindings_runtime_is_preferred_to_the_old_cudart(monkeypatch):
    """(test double) cuda-bindings >= 12.6 has cuda.bindings.runtime (13 only that); older
    cuda-python has cuda.cudart."""
    import sys
    import types
    new, old = object(), object()
    cuda = types.ModuleType('cuda')
    cuda.cudart = old
    bindings = types.ModuleType('cuda.bindings')
    bindings.runtime = new
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, 'cuda', cuda)
    monkeypatch.setitem(sys.modules, 'cuda.bindings', bindings)
    assert cuda_memory._cudart() is new
    monkeypatch.setitem(sys.modules, 'cuda.bindings', None)  # not installed
    assert cuda_memory._cudart() is old


# ---------------------------------------------------------------- fp16 tail, timing cache, 8.5
@pytest.mark.parametrize('version', ('8.6.1', '10.3.0'))
def test_fp16_build_keeps_the_decoding_tail_fp32(version, tmp_path):
    """(test double) with BuilderFlag.FP16 the layers after the last Conv/MatMul and the
    index ops get fp32 precision and outputs (float ones only), and precision constraints are
    preferred; the backbone and head stay free to run fp16."""
    trt = fake_tensorrt(version)
    captured = []
    real = trt.Builder.create_network
    trt.Builder.create_network = lambda self, flags: captured.append(real(self, flags)) or \
        captured[-1]
    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'graph')
    build(trt, path=onnx)
    layers = {layer.name: layer for layer in captured[0].layers}
    fp32 = {name for name, layer in layers.items() if layer.precision == trt.float32}
    assert fp32 == {'decode', 'gather'}  # topk has an int output, shape_of is integer
    assert layers['decode'].output_types == {0: trt.float32}
    assert ('set_flag', trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS) in trt.calls
    trt32 = fake_tensorrt(version)
    build(trt32, precision='fp32', path=onnx)
    assert 'set_flag' not in names(trt32.calls)


def test_tail_rule_matches_the_onnx_rule_of_tensorrt_11():
    """The network rule and the ONNX-graph rule (fp16 graph of 11) name the same tail."""
    onnx = pytest.importorskip('onnx')
    graph = onnx.load(str(BUNDLED)).graph
    tail = set(trt_backend.fp32_node_names(graph))
    ops = {n.op_type for n in graph.node if n.name in tail}
    assert {'TopK', 'NonMaxSuppression'} <= ops and 'Conv' not in ops


@pytest.mark.parametrize('version', VERSIONS)
def test_builds_share_a_timing_cache_per_tensorrt_and_gpu(version, tmp_path):
    """(test double) the first build starts an empty timing cache and stores it; the next
    build (another model or precision) starts from the stored bytes."""
    trt = fake_tensorrt(version)
    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'graph')
    timing = EngineCache(tmp_path / 'engines').timing_cache_path(version, 'Orin (64GB)', (8, 7))
    assert timing.name == f'timing-trt{version}-Orin--64GB--sm87.cache'
    trt_backend.build_engine(trt, None, onnx, 'fp16', [[1, 3, 64, 64]] * 3, timing)
    assert ('create_timing_cache', b'') in trt.calls
    assert ('set_timing_cache', b'', False) in trt.calls
    assert timing.read_bytes() == b'+measured'
    trt.calls.clear()
    trt_backend.build_engine(trt, None, onnx, 'fp32', [[1, 3, 64, 64]] * 3, timing)
    assert ('create_timing_cache', b'+measured') in trt.calls
    assert timing.read_bytes() == b'+measured+measured'


def test_a_corrupt_timing_cache_is_replaced_with_a_warning(tmp_path, caplog):
    trt = fake_tensorrt('10.3.0')
    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'graph')
    timing = tmp_path / 'timing.cache'
    timing.write_bytes(b'corrupt')
    with caplog.at_level(logging.WARNING):
        trt_backend.build_engine(trt, None, onnx, 'fp16', [[1, 3, 64, 64]] * 3, timing)
    assert 'does not load; starting a new one' in caplog.text
    assert timing.read_bytes() == b'+measured'


def test_a_fresh_engine_build_stores_the_timing_cache_beside_the_engines(tmp_path):
    """(test double) TensorRTBackend's build path names the cache by version and GPU."""
    pytest.importorskip('onnx')
    trt = fake_tensorrt('10.3.0')
    trt_backend.TensorRTBackend._engine_from_onnx(backend_for(trt), BUNDLED,
                                                  EngineCache(tmp_path / 'engines'))
    assert [p.name for p in (tmp_path / 'engines').glob('timing-*')] == [
        'timing-trt10.3.0-Orin-sm87.cache']


def test_progress_reports_build_phases_on_tensorrt_10(tmp_path):
    """(test double) IProgressMonitor phases become progress lines for /diagnostics."""
    trt = fake_tensorrt('10.3.0')
    lines = []
    monitor = trt_backend.attach_progress(trt, trt.Builder(None).create_builder_config(),
                                          lines.append)
    monitor.phase_start('Building engine', None, 3)
    monitor.phase_start('Tactic selection', 'Building engine', 100)  # nested: not shown
    assert monitor.step_complete('Building engine', 0) is True
    assert lines == ['building engine: Building engine (0/3)',
                     'building engine: Building engine (1/3)']


def layer_norm_graph(path, computed_k=False):
    """A tiny graph with LayerNormalization (opset 17) or a TopK whose K is computed."""
    onnx = pytest.importorskip('onnx')
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, None])
    if computed_k:
        nodes = [helper.make_node('Shape', ['x'], ['s']),
                 helper.make_node('Slice', ['s', 'one', 'two'], ['k']),
                 helper.make_node('TopK', ['x', 'k'], ['y', 'i'])]
        inits = [helper.make_tensor('one', TensorProto.INT64, [1], [1]),
                 helper.make_tensor('two', TensorProto.INT64, [1], [2])]
    else:
        nodes = [helper.make_node('LayerNormalization', ['x', 'g'], ['y'])]
        inits = [helper.make_tensor('g', TensorProto.FLOAT, [4], [1, 1, 1, 1])]
    graph = helper.make_graph(nodes, 'g', [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), path)
    return path


@pytest.mark.parametrize('computed_k', (False, True))
def test_tensorrt_85_refuses_what_it_cannot_import_before_building(computed_k, tmp_path):
    """(test double of 8.5.2, JetPack 5) LayerNormalization or a computed TopK K: a clear
    BackendUnavailable naming rtmo-export --jetpack5 and ONNX Runtime CUDA, no build."""
    trt = fake_tensorrt('8.5.2')
    path = layer_norm_graph(tmp_path / 'g.onnx', computed_k)
    with pytest.raises(BackendUnavailable, match='TensorRT 8.5.2 cannot import') as err:
        trt_backend.build_engine(trt, None, path, 'fp16', [[1, 4]] * 3)
    assert '--jetpack5' in str(err.value) and 'ort_provider' in str(err.value)
    assert ('a TopK whose K is computed' in str(err.value)) == computed_k
    assert trt.calls == []


def test_tensorrt_85_builds_a_graph_without_either(tmp_path):
    """(test double) the bundled graph has LayerNormalization; a decomposed one passes."""
    trt = fake_tensorrt('8.5.2')
    onnx = pytest.importorskip('onnx')
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])])
    path = tmp_path / 'relu.onnx'
    onnx.save(helper.make_model(graph), path)
    assert trt_backend.build_engine(trt, None, path, 'fp32', [[1, 4]] * 3) == b'serialized-engine'


def test_tensorrt_86_warns_about_a_computed_topk_k(tmp_path, caplog):
    trt = fake_tensorrt('8.6.1')
    path = layer_norm_graph(tmp_path / 'g.onnx', computed_k=True)
    with caplog.at_level(logging.WARNING):
        trt_backend.build_engine(trt, None, path, 'fp32', [[1, 4]] * 3)
    assert 'TopK whose K is computed' in caplog.text and 'rtmo-export' in caplog.text


def test_tensorrt_before_85_has_no_nms_importer(tmp_path):
    with pytest.raises(BackendUnavailable, match='no NonMaxSuppression importer'):
        trt_backend.build_engine(fake_tensorrt('8.4.3'), None, BUNDLED, 'fp32', [[1]] * 3)


def test_fp16_graph_of_mmdeploys_graph_loads_and_finds_the_same_people(parity_dir):
    """mmdeploy's official graph reads its ``dets`` output again inside (DCC decoding): the
    fp16 conversion must not feed that fp32 output to fp16 nodes (ONNX Runtime refused the
    graph with a Mul type error before ``_separate_outputs``)."""
    pytest.importorskip('onnxconverter_common')
    ort = pytest.importorskip('onnxruntime')
    graph = parity_dir / 'rtmo-s_coco_seed1_mmdeploy.onnx'
    x = np.load(parity_dir / 'rtmo-s_coco_seed1_io.npz')['input']
    sessions = [ort.InferenceSession(g, providers=['CPUExecutionProvider'])
                for g in (str(graph), trt_backend.fp16_graph(graph))]
    (d32, k32), (d16, k16) = [s.run(None, {'input': x}) for s in sessions]
    # the 10 best of fp32 (random weights: scores near 0.15 lie within 1e-3 of each other,
    # so fp16 may reorder or swap a few at the margin)
    dist = np.abs(d16[0, :, None, :4] - d32[0, None, :10, :4]).max(-1)
    found = dist.min(0) < 1.0
    assert found.sum() >= 8
    match = dist.argmin(0)[found]
    drift = np.linalg.norm(k16[0, match, :, :2] - k32[0, :10][found][..., :2], axis=-1)
    assert np.median(drift) < 0.05
