"""TensorRT backend (TensorRT 8.6, 10.x and 11.x; Jetson JetPack and x86).

Given an ONNX graph it builds an engine on first use (fp16 or fp32; minutes on a Jetson),
caches it (``engine_cache``: keyed by ONNX sha256, TensorRT version, GPU name and compute
capability, precision and input shape) and loads it from the cache afterwards. fp16 is the
``BuilderFlag.FP16`` of a weakly typed network where TensorRT has it (8.6, 10); TensorRT 11
builds strongly typed networks only, so there the graph itself is converted to fp16 first
(``fp16_graph``: fp32 inputs and outputs, NMS/TopK/gathers and the decoding after the head
kept fp32) and the cache is keyed on the converted graph. A serialized engine
(``.engine``/``.plan``) is loaded as is. Inference uses the named I/O tensor API
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``, TensorRT >= 8.5) and
falls back to the binding API (``execute_async_v2``) where that is absent. The official RTMO
graphs end in a NonMaxSuppression whose output count depends on the data: those outputs get
an ``IOutputAllocator`` (TensorRT 10 no longer reports their shape otherwise).

Builds reuse a timing cache per TensorRT version and GPU (``EngineCache.timing_cache_path``).
In fp16 on 8.6/10 the decoding tail (``tail_layers``: no Conv/MatMul downstream) and index ops
are constrained to fp32, as the fp16 graph of 11 keeps them. TensorRT 8.5 (JetPack 5) imports
neither LayerNormalization nor a TopK whose K is computed: ``check_parsable`` refuses such a
graph before the build, naming ``rtmo-export --jetpack5`` and ONNX Runtime's CUDA provider.
"""
import logging
import os
import pathlib
import tempfile
import time
import warnings

import numpy as np

from ..download import atomic_write, sha256_of
from ..engine_cache import EngineCache, make_key
from . import Backend, BackendUnavailable, cuda_index
from .cuda_memory import device_count, open_device
from .onnxruntime_backend import GRAPH_NMS_THR
from .tensorrt_io import make_io

LOG = logging.getLogger(__name__)
MAX_BATCH = 8  # optimisation-profile maximum for graphs with a dynamic batch axis
WORKSPACE = 1 << 30
# ops kept fp32 in the fp16 graph (besides onnxconverter-common's defaults, which hold
# NonMaxSuppression, TopK, Resize, Range): index and data-dependent ops, the positional
# encoding's Sin/Cos, and Casts (the converter mistypes Casts of shape arithmetic)
FP32_OPS = ('NonMaxSuppression', 'TopK', 'Gather', 'GatherElements', 'GatherND', 'ScatterND',
            'NonZero', 'Cast', 'Sin', 'Cos')
WEIGHTED_OPS = ('Conv', 'ConvTranspose', 'MatMul', 'Gemm')
NO_CONVERTER = ('TensorRT {version} builds fp16 engines only from an fp16 graph, and converting '
                'the ONNX graph needs onnxconverter-common: pip install onnxconverter-common, '
                "or use precision='fp32'")

NO_TENSORRT = ('the tensorrt backend needs TensorRT\'s Python package, which is not importable '
               '({err}): on Jetson install JetPack\'s python3-libnvinfer (sudo apt install '
               'python3-libnvinfer), on x86 pip install tensorrt from NVIDIA\'s index '
               '(pip install --extra-index-url https://pypi.nvidia.com tensorrt), or use '
               "backend='onnxruntime'")


def import_tensorrt():
    """Return the tensorrt module or raise BackendUnavailable with the fix."""
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailable(NO_TENSORRT.format(err=err)) from None
    return tensorrt


def cuda_device_count():
    """Number of visible CUDA devices (see ``cuda_memory.device_count``)."""
    return device_count()


def device_index(device):
    """'cuda' / 'cuda:N' / None -> N; anything else is an error (TensorRT runs on CUDA only)."""
    return cuda_index(device, "the tensorrt backend runs on cuda or cuda:N; use "
                              "backend='onnxruntime' for the CPU")


class TensorRTBackend(Backend):
    """An RTMO engine on one CUDA device and one stream; see the module docstring.

    ``precision`` is what the engine is built with ('fp16' | 'fp32'); for a prebuilt
    ``.engine`` it is reported as given, since the file does not record it.
    """

    name = 'tensorrt'
    graph_nms_thr = GRAPH_NMS_THR

    def __init__(self, path, device=None, precision='fp16', cache_dir=None, progress=None):
        index = device_index(device)
        self.progress = progress or (lambda text: None)
        self.trt = import_tensorrt()
        self.cuda = open_device(index)
        self.precision = precision
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        path = pathlib.Path(path)
        if path.suffix.lower() == '.onnx':
            self.engine = self._engine_from_onnx(path, EngineCache(cache_dir))
        else:
            self.engine = self._deserialize(path.read_bytes())
            if self.engine is None:
                raise ValueError(f'{path} is not a TensorRT engine for TensorRT '
                                 f'{self.trt.__version__} on {self.cuda.gpu_name}; rebuild it '
                                 'here or pass the .onnx graph to build one automatically')
        self.context = self.engine.create_execution_context()
        self.io = make_io(self.trt, self.engine, self.context, self.cuda)
        self.input_size = self.io.input_size
        self.max_batch = self.io.max_batch
        self.num_keypoints = self.io.num_keypoints

    def _deserialize(self, data):
        return self.trt.Runtime(self.logger).deserialize_cuda_engine(data)

    def _engine_from_onnx(self, onnx_path, cache):
        shape = onnx_input_shape(onnx_path)
        profile = profile_shapes(shape)
        with tempfile.TemporaryDirectory(prefix='rtmo-trt-') as tmp:
            graph = onnx_path
            if self.precision == 'fp16' and not has_fp16_flag(self.trt):
                graph = pathlib.Path(tmp) / onnx_path.name
                graph.write_bytes(fp16_graph(onnx_path, self.trt.__version__))
            key = make_key(sha256_of(graph), self.trt.__version__, self.cuda.gpu_name,
                           self.cuda.capability, self.precision, profile)
            cached = cache.lookup(onnx_path.stem, key)
            if cached is not None:
                engine = self._deserialize(cached.read_bytes())
                if engine is not None:
                    LOG.info('rtmo: loaded TensorRT engine %s', cached)
                    return engine
                LOG.warning('rtmo: cached engine %s does not deserialize: rebuilding', cached)
                cache.discard(onnx_path.stem, key)
            timing = cache.timing_cache_path(self.trt.__version__, self.cuda.gpu_name,
                                             self.cuda.capability)
            data = build_engine(self.trt, self.logger, graph, self.precision, profile,
                                timing_cache=timing, progress=self.progress)
        stored = cache.try_store(onnx_path.stem, key, data)  # read-only cache: a warning
        if stored is not None:
            LOG.info('rtmo: cached TensorRT engine in %s', stored)
        engine = self._deserialize(data)
        if engine is None:
            raise RuntimeError(f'TensorRT {self.trt.__version__} built an engine from '
                               f'{onnx_path} but cannot deserialize it; see the TensorRT '
                               'messages above')
        return engine

    def infer(self, inputs):
        """Run the engine on (B, 3, H, W) float32; return [(dets, keypoints)] per image.

        Selects the backend's device first: CUDA's current device is per thread and this runs
        in the node's worker thread, not the one that created the backend.
        """
        self.cuda.select()
        dets, kpts = self.io.run(np.asarray(inputs))
        return list(zip(dets, kpts))

    def close(self):
        """Free device buffers, the context, the engine and the stream."""
        if getattr(self, 'io', None) is not None:
            self.cuda.select()
            self.io.free()
            self.io = None
        self.context = self.engine = None
        if getattr(self, 'cuda', None) is not None:
            self.cuda.close()
            self.cuda = None


def onnx_input_shape(onnx_path):
    """Return the ONNX graph's input shape [B, 3, H, W] with -1 for symbolic dimensions."""
    return onnx_input(onnx_path)[1]


def onnx_input(onnx_path):
    """(name, [B, 3, H, W] with -1 for symbolic dimensions) of the ONNX graph's input."""
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable('building a TensorRT engine needs the onnx package to read '
                                 'the graph\'s input shape: pip install onnx') from None
    graph = onnx.load(os.fspath(onnx_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    first = next(i for i in graph.input if i.name not in initializers)
    dims = first.type.tensor_type.shape.dim
    return first.name, [d.dim_value if d.HasField('dim_value') else -1 for d in dims]


def profile_shapes(shape):
    """(min, opt, max) input shapes: batch 1..MAX_BATCH when the batch axis is dynamic."""
    if any(d <= 0 for d in shape[1:]):
        raise ValueError(f'the ONNX input shape {shape} has a dynamic spatial size; RTMO '
                         'graphs are exported at a fixed size (640 or 416)')
    if shape[0] > 0:
        return [list(shape)] * 3
    rest = list(shape[1:])
    return [[1] + rest, [1] + rest, [MAX_BATCH] + rest]


def has_fp16_flag(trt):
    """True where TensorRT builds weakly typed networks with ``BuilderFlag.FP16`` (8.6, 10);
    TensorRT 11 removed it (strongly typed networks only: fp16 comes from an fp16 graph)."""
    return not hasattr(trt, 'BuilderFlag') or hasattr(trt.BuilderFlag, 'FP16')


def fp32_node_names(graph):
    """Names of the nodes kept fp32: ``FP32_OPS`` and the tail after the last weighted layer.

    The tail (nodes with no Conv/MatMul/Gemm downstream) is the decoding of boxes and keypoints
    from the head's outputs and the NMS selection: in fp16 its pixel coordinates would have
    0.5 px steps between 512 and 1024. ONNX nodes are topologically sorted, so one backward
    pass finds it.
    """
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    feeds_weights = set()
    for node in reversed(graph.node):
        if node.op_type in WEIGHTED_OPS or any(
                c in feeds_weights for out in node.output for c in consumers.get(out, ())):
            feeds_weights.add(node.name)
    return [n.name for n in graph.node
            if n.op_type in FP32_OPS or n.name not in feeds_weights]


def fp16_graph(onnx_path, tensorrt_version='11'):
    """Return the serialized mixed-precision graph for a strongly typed fp16 build.

    Weights and activations of the network become fp16; inputs and outputs stay fp32, and the
    nodes of ``fp32_node_names`` stay fp32 (Casts inserted at the borders).
    """
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError:
        raise BackendUnavailable(NO_CONVERTER.format(version=tensorrt_version)) from None
    model = onnx.load(os.fspath(onnx_path))
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f'{node.op_type}_{i}'  # the block list is by name
    del model.graph.value_info[:]  # stale fp32 types would contradict the converted nodes
    _separate_outputs(model.graph, onnx.helper)
    # FP32_OPS are blocked by node name: blocking Cast by op type makes the converter block
    # (and wrap in new Casts) the Casts it inserts itself, without end
    with warnings.catch_warnings():  # one warning per weight below fp16's 1e-7 floor
        warnings.simplefilter('ignore', UserWarning)
        model = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=float16.DEFAULT_OP_BLOCK_LIST,
            node_block_list=fp32_node_names(model.graph))
    _float_outputs(model.graph, onnx.TensorProto, onnx.helper)
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _separate_outputs(graph, helper):
    """Give a graph output that other nodes also read an Identity of its own.

    With ``keep_io_types`` the converter casts such an output back to fp32 under its original
    name, which its readers inside the graph still use: fp16 nodes would then get an fp32
    input (mmdeploy's graph reads ``dets`` again to decode the keypoints).
    """
    read = {name for node in graph.node for name in node.input}
    for output in graph.output:
        if output.name not in read:
            continue
        inner = f'{output.name}_inner'
        for node in graph.node:
            node.input[:] = [inner if name == output.name else name for name in node.input]
            node.output[:] = [inner if name == output.name else name for name in node.output]
        graph.node.append(helper.make_node('Identity', [inner], [output.name],
                                           name=f'{output.name}_output'))


def _float_outputs(graph, proto, helper):
    """Make fp16 graph outputs fp32 again.

    onnxconverter-common 1.16 ends an output produced by a blocked (fp32) node with a Cast to
    fp16 even with ``keep_io_types``: that Cast becomes a Cast to fp32 (a no-op), so the fp32
    coordinates are not rounded through fp16; other fp16 outputs get a Cast appended.
    """
    producers = {out: node for node in graph.node for out in node.output}
    for output in graph.output:
        if output.type.tensor_type.elem_type != proto.FLOAT16:
            continue
        output.type.tensor_type.elem_type = proto.FLOAT
        node = producers[output.name]
        if node.op_type == 'Cast':
            for attr in node.attribute:
                if attr.name == 'to':
                    attr.i = proto.FLOAT
            continue
        index = list(node.output).index(output.name)
        node.output[index] = f'{output.name}_fp16'
        graph.node.append(helper.make_node('Cast', [node.output[index]], [output.name],
                                           name=f'{output.name}_to_fp32', to=proto.FLOAT))


def network_flags(trt):
    """``create_network`` flags: EXPLICIT_BATCH before TensorRT 10 (the only mode from 10 on;
    the flag is gone in 11)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH', None)
    if flag is None or int(trt.__version__.split('.')[0]) >= 10:
        return 0
    return 1 << int(flag)


def build_engine(trt, logger, onnx_path, precision, profile, timing_cache=None,
                 progress=None):
    """Parse the ONNX graph and build a serialized engine; return its bytes.

    fp16 sets ``BuilderFlag.FP16`` where it exists, with the decoding tail kept fp32
    (``keep_tail_fp32``); without the flag (TensorRT 11) ``onnx_path`` is expected to be the
    fp16 graph already (``fp16_graph``). ``timing_cache``: file read before and written after
    the build. ``progress``: called with a line of text per build phase.
    """
    progress = progress or (lambda text: None)
    check_parsable(trt, onnx_path)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    progress(f'parsing {pathlib.Path(onnx_path).name} with TensorRT {trt.__version__}')
    if not parser.parse_from_file(os.fspath(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f'TensorRT {trt.__version__} cannot parse {onnx_path}: {errors} ('
                         'graphs made by rtmo-export are the ones this project builds; '
                         "backend='onnxruntime' runs any RTMO graph)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
    if precision == 'fp16' and has_fp16_flag(trt):
        config.set_flag(trt.BuilderFlag.FP16)
        kept = keep_tail_fp32(trt, network, config)
        LOG.info('rtmo: %d TensorRT layers (decoding, NMS, indices) kept fp32', kept)
    opt = builder.create_optimization_profile()
    opt.set_shape(network.get_input(0).name, *profile)
    config.add_optimization_profile(opt)
    timings = use_timing_cache(config, timing_cache)
    monitor = attach_progress(trt, config, progress)
    LOG.warning('rtmo: building a %s TensorRT engine from %s; this runs once and takes '
                'minutes on a Jetson', precision, onnx_path)
    progress(f'building a {precision} engine (minutes on a Jetson)')
    start = time.monotonic()
    data = builder.build_serialized_network(network, config)
    del monitor
    if data is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {onnx_path}; see the '
                           'TensorRT messages above')
    LOG.warning('rtmo: TensorRT engine built in %.0f s', time.monotonic() - start)
    save_timing_cache(config, timings, timing_cache)
    return bytes(data)


def graph_findings(onnx_path):
    """What in an ONNX graph decides whether an older TensorRT imports it:
    ``{'layer_norm': bool, 'computed_topk_k': bool}`` (K not an initializer or Constant)."""
    import onnx
    graph = onnx.load(os.fspath(onnx_path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    constants.update(out for node in graph.node if node.op_type == 'Constant'
                     for out in node.output)
    topk_k = [node.input[1] for node in graph.node if node.op_type == 'TopK']
    return {'layer_norm': any(n.op_type == 'LayerNormalization' for n in graph.node),
            'computed_topk_k': any(k not in constants for k in topk_k)}


JETPACK5 = ("TensorRT {version} cannot import {what}; JetPack 5's TensorRT 8.5 needs a graph "
            'without both: rtmo-export CHECKPOINT OUT.onnx --jetpack5 (LayerNormalization '
            "decomposed, constant TopK K), or run backend='onnxruntime' with ort_provider "
            'cuda (onnxruntime-gpu for JetPack 5 from the Jetson Zoo)')


def check_parsable(trt, onnx_path):
    """Refuse, before a minutes-long attempt, a graph the installed TensorRT cannot import.

    TensorRT < 8.5 has no NonMaxSuppression importer; 8.5 imports neither
    LayerNormalization (8.6 on) nor a TopK whose K is computed (mmdeploy's RTMO graph). On
    8.6 and later a computed K is only warned about: whether the builder takes it is
    undocumented, and rtmo-export's constant-K graph is the one to prefer.
    """
    version = tuple(int(v) for v in trt.__version__.split('.')[:2])
    if version < (8, 5):
        raise BackendUnavailable(f'TensorRT {trt.__version__} has no NonMaxSuppression '
                                 "importer (8.5 and later do); use backend='onnxruntime'")
    try:
        found = graph_findings(onnx_path)
    except Exception:  # noqa: BLE001 - no onnx package or an odd file: let the parser judge
        return
    if version < (8, 6):
        what = [name for name, key in (('LayerNormalization', 'layer_norm'),
                                       ("a TopK whose K is computed (mmdeploy's graph)",
                                        'computed_topk_k')) if found[key]]
        if what:
            raise BackendUnavailable(JETPACK5.format(version=trt.__version__,
                                                     what=' or '.join(what)))
    elif found['computed_topk_k']:
        LOG.warning('rtmo: %s has a TopK whose K is computed from the data (mmdeploy\'s '
                    'graph, or rtmo-export --rows found); TensorRT does not document whether '
                    'it builds that: if the build fails, export the checkpoint with rtmo-export '
                    '(fixed rows, the default: constant K)', onnx_path)


WEIGHTED_LAYERS = ('CONVOLUTION', 'DECONVOLUTION', 'MATRIX_MULTIPLY', 'FULLY_CONNECTED')
FP32_LAYERS = ('TOPK', 'NMS', 'GATHER', 'SCATTER', 'NON_ZERO')


def tail_layers(trt, network):
    """The network's layers to keep fp32: index ops and the decoding tail after the last
    weighted layer (the same rule as ``fp32_node_names`` for the ONNX graph of TensorRT 11)."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    kinds = {getattr(trt.LayerType, name, None) for name in WEIGHTED_LAYERS} - {None}
    index_kinds = {getattr(trt.LayerType, name, None) for name in FP32_LAYERS} - {None}
    consumers = {}
    for i, layer in enumerate(layers):
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            if tensor is not None:
                consumers.setdefault(tensor.name, []).append(i)
    feeds_weights = set()
    for i in reversed(range(len(layers))):
        outputs = [layers[i].get_output(j).name for j in range(layers[i].num_outputs)]
        if layers[i].type in kinds or any(c in feeds_weights for name in outputs
                                          for c in consumers.get(name, ())):
            feeds_weights.add(i)
    return [layer for i, layer in enumerate(layers)
            if layer.type in index_kinds or i not in feeds_weights]


def keep_tail_fp32(trt, network, config):
    """Constrain ``tail_layers`` with float outputs to fp32 in an fp16 build; return how many.

    In fp16 the keypoint decoding would have 0.5 px steps between 512 and 1024 px.
    PREFER (not OBEY) precision constraints: a layer without an fp32 kernel warns instead
    of failing the build.
    """
    kept = 0
    for layer in tail_layers(trt, network):
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(out.dtype != trt.float32 for out in outputs):
            continue  # integer / bool layers (indices, shapes) have no fp16 form anyway
        layer.precision = trt.float32
        for j in range(len(outputs)):
            layer.set_output_type(j, trt.float32)
        kept += 1
    if kept:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return kept


def use_timing_cache(config, path):
    """Give the build the timing cache stored at ``path`` (an empty one when there is none or
    it does not load); return the ``ITimingCache``."""
    data = b''
    if path is not None and pathlib.Path(path).is_file():
        data = pathlib.Path(path).read_bytes()
    cache = config.create_timing_cache(data)
    if cache is None and data:  # a corrupt or foreign file: start afresh
        LOG.warning('rtmo: TensorRT timing cache %s does not load; starting a new one', path)
        cache = config.create_timing_cache(b'')
    config.set_timing_cache(cache, False)
    return cache


def save_timing_cache(config, cache, path):
    """Write the build's timing cache back to ``path`` (a warning when it cannot be written)."""
    if path is None or cache is None:
        return
    try:
        atomic_write(path, bytes(config.get_timing_cache().serialize()))
    except OSError as err:
        LOG.warning('rtmo: cannot write the TensorRT timing cache %s (%s); the next build '
                    'measures its kernels again', path, err)


def attach_progress(trt, config, progress=None):
    """Report build phases (log and ``progress``) through an IProgressMonitor where TensorRT
    has one (>= 10)."""
    if not hasattr(trt, 'IProgressMonitor') or not hasattr(config, 'progress_monitor'):
        return None
    report = progress or (lambda text: None)

    class Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.start = time.monotonic()
            self.steps = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:  # top-level phases only: a few lines, not thousands
                self.steps[phase_name] = num_steps
                LOG.warning('rtmo: TensorRT build %5.0f s: %s (%d steps)',
                            time.monotonic() - self.start, phase_name, num_steps)
                report(f'building engine: {phase_name} (0/{num_steps})')

        def step_complete(self, phase_name, step):
            if phase_name in self.steps:
                report(f'building engine: {phase_name} ({step + 1}/{self.steps[phase_name]})')
            return True  # never cancel

        def phase_finish(self, phase_name):
            self.steps.pop(phase_name, None)

    monitor = Progress()
    config.progress_monitor = monitor
    return monitor
