"""ONNX Runtime backend: CPU, the CUDA execution provider or the TensorRT execution provider.

``provider`` ('auto' | 'cpu' | 'cuda' | 'tensorrt') picks ONNX Runtime's execution provider:
'auto' runs on the CPU unless ``device`` names a CUDA device, and there prefers the TensorRT
execution provider (when onnxruntime lists it and TensorRT's library loads) to the CUDA one.
The TensorRT provider builds its engine on the first ``run`` (minutes on a Jetson) and caches it
and its timing cache under the engine cache directory (``ort-tensorrt/``), fp16 when
``precision`` is fp16. ONNX Runtime silently falls back to the CPU when a provider cannot start;
that is checked after the session is made: refused when the provider was asked for by name,
logged when it was 'auto'.
"""
import ctypes
import logging
import os

import numpy as np

from . import Backend, BackendUnavailable, cuda_index, not_loadable

LOG = logging.getLogger(__name__)

# IoU threshold of the NMS inside the official graphs: mmdeploy takes it from the model's
# test_cfg (nms_thr=0.65 in every RTMO config) when exporting; it cannot change afterwards.
GRAPH_NMS_THR = 0.65
ORT_PROVIDERS = ('auto', 'cpu', 'cuda', 'tensorrt')
PROVIDER_NAMES = {'tensorrt': 'TensorrtExecutionProvider', 'cuda': 'CUDAExecutionProvider',
                  'cpu': 'CPUExecutionProvider'}
# libnvinfer of TensorRT 11, 10 and 8 (onnxruntime-gpu lists its TensorRT provider even when
# TensorRT is not installed, and then falls back with an error at session creation)
NVINFER = ('libnvinfer.so.11', 'libnvinfer.so.10', 'libnvinfer.so.8', 'nvinfer_11.dll',
           'nvinfer_10.dll', 'nvinfer.dll')
TRT_WORKSPACE = 1 << 30


def import_onnxruntime():
    """Return the onnxruntime module or raise BackendUnavailable with the install command."""
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailable(
            'the onnxruntime backend needs the onnxruntime package: pip install onnxruntime '
            f'(or onnxruntime-gpu for CUDA) ({err})') from None
    return onnxruntime


def available_providers():
    """Short names ('tensorrt', 'cuda', 'cpu') of the providers onnxruntime was built with
    (the TensorRT one only when TensorRT's library loads too); [] without onnxruntime."""
    try:
        listed = import_onnxruntime().get_available_providers()
    except BackendUnavailable:
        return []
    found = [short for short, name in PROVIDER_NAMES.items() if name in listed]
    if 'tensorrt' in found and not nvinfer_loadable():
        found.remove('tensorrt')
    return found


def nvinfer_loadable():
    """True when a TensorRT runtime library (libnvinfer) can be loaded by this process."""
    for name in NVINFER:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def cuda_provider_available():
    """Return True when onnxruntime is installed with its CUDA execution provider."""
    return 'cuda' in available_providers()


def check_provider(provider, device=None, precision='fp32'):
    """Raise ValueError for an unknown provider or one that contradicts device / precision."""
    if provider not in ORT_PROVIDERS:
        raise ValueError(f'ort_provider must be one of {", ".join(ORT_PROVIDERS)}, got '
                         f'{provider!r}')
    on_cpu = (device or '').lower() == 'cpu'
    if provider in ('cuda', 'tensorrt') and on_cpu:
        raise ValueError(f'ort_provider {provider} runs on a CUDA device, but device is cpu; '
                         'leave device empty or set cuda / cuda:N')
    if provider == 'cpu' and (device or 'cpu').lower().startswith('cuda'):
        raise ValueError(f'ort_provider cpu contradicts device {device!r}; use ort_provider '
                         'auto, cuda or tensorrt for a CUDA device')
    if precision == 'int8' and provider in ('cuda', 'tensorrt'):
        raise ValueError('precision int8 is the calibrated CPU graph: use ort_provider cpu '
                         '(or auto), or fp16/fp32 on a GPU')


def resolve_provider(provider, device):
    """'auto' -> the provider ``device`` asks for ('cpu' for None/cpu; tensorrt > cuda for a
    CUDA device); an explicit name is returned if onnxruntime has it, else BackendUnavailable."""
    device = (device or 'cpu').lower()
    if provider == 'auto':
        if device == 'cpu':
            return 'cpu'
        found = available_providers()
        provider = next((p for p in ('tensorrt', 'cuda') if p in found), 'cuda')
    if provider != 'cpu' and provider not in available_providers():
        raise BackendUnavailable(MISSING[provider].format(device=device))
    return provider


MISSING = {
    'cuda': 'device {device!r} needs onnxruntime with the CUDA execution provider: pip '
            'uninstall onnxruntime && pip install onnxruntime-gpu',
    'tensorrt': "ort_provider tensorrt needs onnxruntime-gpu and TensorRT's libraries "
                '(libnvinfer); install TensorRT, or use ort_provider cuda'}


def device_id(device):
    """'cuda' / 'cuda:N' / None -> N for the CUDA and TensorRT providers."""
    return cuda_index(device, 'onnxruntime runs on cpu, cuda or cuda:N')


def providers_for(device, provider='auto', precision='fp32', cache_dir=None, onnx_path=None):
    """ONNX Runtime's provider list for ``device`` ('cpu', 'cuda', 'cuda:N', None = cpu)."""
    check_provider(provider, device, precision)
    if device is None and provider in ('cuda', 'tensorrt'):
        device = 'cuda'
    device = (device or 'cpu').lower()
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f'unknown device {device!r} for onnxruntime; use cpu, cuda or cuda:N')
    chosen = resolve_provider(provider, device)
    if chosen == 'cpu':
        return ['CPUExecutionProvider']
    cuda = ('CUDAExecutionProvider', {'device_id': device_id(device)})
    if chosen == 'cuda':
        return [cuda, 'CPUExecutionProvider']
    trt = ('TensorrtExecutionProvider', tensorrt_options(device_id(device), precision,
                                                          cache_dir, onnx_path))
    return [trt, cuda, 'CPUExecutionProvider']


def tensorrt_options(index, precision, cache_dir=None, onnx_path=None):
    """Options of the TensorRT provider: fp16, engine and timing caches in a writable folder,
    and for a graph with a dynamic batch axis a profile of batch 1..8 (the tensorrt backend's),
    since the provider would otherwise rebuild its engine for every new batch size."""
    options = {'device_id': index, 'trt_fp16_enable': precision == 'fp16',
               'trt_max_workspace_size': TRT_WORKSPACE}
    options.update(batch_profile(onnx_path))
    folder = ort_tensorrt_cache(cache_dir)
    if folder is not None:
        options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(folder),
                       trt_timing_cache_enable=True, trt_timing_cache_path=str(folder))
    return options


def batch_profile(onnx_path):
    """``trt_profile_*_shapes`` options for a graph whose batch axis is dynamic, else {}."""
    if onnx_path is None:
        return {}
    from .tensorrt_backend import MAX_BATCH, onnx_input
    try:
        name, shape = onnx_input(onnx_path)
    except BackendUnavailable:  # no onnx package: the provider still runs, building per batch
        return {}
    if shape[0] > 0:
        return {}
    dims = ['x'.join(str(d) for d in [batch] + shape[1:]) for batch in (1, 1, MAX_BATCH)]
    return {'trt_profile_min_shapes': f'{name}:{dims[0]}',
            'trt_profile_opt_shapes': f'{name}:{dims[1]}',
            'trt_profile_max_shapes': f'{name}:{dims[2]}'}


def ort_tensorrt_cache(cache_dir=None):
    """``<engine cache>/ort-tensorrt``, created; None (engines rebuilt each start) when the
    folder cannot be written."""
    from ..engine_cache import writable_subfolder
    return writable_subfolder(cache_dir, 'ort-tensorrt', 'the TensorRT provider rebuilds its '
                              'engine at every start; set cache_dir or RTMO_HOME to a writable '
                              'folder')


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session over an RTMO graph with inputs ``input`` and outputs
    ``dets`` (B, N, 5) and ``keypoints`` (B, N, K, 3) (mmdeploy's contract).

    ``num_threads`` sets ``intra_op_num_threads`` (None: ONNX Runtime's default, one per core).
    Input size and keypoint count are read from the graph. ``precision='int8'`` runs the
    int8 (QDQ) graph of ``onnx_path`` made by ``quantize.int8_path`` (calibrated and cached in
    ``cache_dir`` on first use); 'fp16' is honoured by the TensorRT provider only; anything
    else runs the graph as it is (fp32). ``provider``: see the module docstring; the one in use
    is ``self.provider``.
    """

    name = 'onnxruntime'
    precision = 'fp32'
    graph_nms_thr = GRAPH_NMS_THR

    def __init__(self, onnx_path, device=None, num_threads=None, precision='fp32',
                 cache_dir=None, provider='auto'):
        ort = import_onnxruntime()
        providers = providers_for(device, provider, precision, cache_dir, onnx_path)
        if precision == 'int8':
            from ..quantize import int8_path
            onnx_path = int8_path(onnx_path, cache_dir)
            self.precision = 'int8'
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(os.fspath(onnx_path), options,
                                                providers=providers)
        except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail...)
            raise not_loadable(onnx_path, err) from None
        self._check_provider(providers, provider)
        if self.provider == 'tensorrt' and precision == 'fp16':
            self.precision = 'fp16'
        self.device = 'cpu' if self.provider == 'cpu' else device or 'cuda'
        self._read_io()

    def _check_provider(self, asked, provider):
        """Set ``self.provider`` to the provider the session really runs first; a fallback
        from a provider asked for by name is an error, from 'auto' a warning."""
        wanted = asked[0] if isinstance(asked[0], str) else asked[0][0]
        running = self.session.get_providers()
        self.provider = next((short for short, name in PROVIDER_NAMES.items()
                              if name == running[0]), 'cpu')
        if running[0] == wanted:
            return
        why = (f'onnxruntime could not start {wanted} and fell back to {running[0]} (see its '
               'messages above: a missing CUDA/cuDNN/TensorRT library or a version mismatch)')
        if provider != 'auto':
            self.session = None
            raise BackendUnavailable(why)
        LOG.warning('rtmo: %s', why)

    def _read_io(self):
        inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not {'dets', 'keypoints'} <= set(
                outputs):
            raise ValueError('the ONNX graph is not an RTMO pose-detection graph: expected one '
                             'input (B, 3, H, W) and outputs dets, keypoints; got '
                             f'{[i.name for i in inputs]} -> {list(outputs)}')
        self.input_name = inputs[0].name
        batch, _, height, width = inputs[0].shape
        if not isinstance(height, int) or not isinstance(width, int):
            raise ValueError(f'the ONNX input has no fixed spatial size ({inputs[0].shape}); '
                             'RTMO graphs are exported at a fixed size (640 or 416)')
        self.input_size = (width, height)
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None
        num_kpts = outputs['keypoints'].shape[2]
        if not isinstance(num_kpts, int):  # symbolic K: ask the graph once
            probe = np.zeros((1, 3, height, width), np.float32)
            num_kpts = self.session.run(['keypoints'], {self.input_name: probe})[0].shape[2]
        self.num_keypoints = num_kpts

    def infer(self, inputs):
        """Run the session on (B, 3, H, W) float32; return [(dets, keypoints)] per image."""
        dets, kpts = self.session.run(['dets', 'keypoints'], {self.input_name: inputs})
        return list(zip(dets, kpts))

    def close(self):
        """Drop the session (ONNX Runtime frees its memory, on the GPU too, with it)."""
        self.session = None
