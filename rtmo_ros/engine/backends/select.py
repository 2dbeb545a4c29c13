"""Pick a backend for a model file and create it (imports each backend module lazily)."""
import importlib.util
import logging

from . import BackendUnavailable

LOG = logging.getLogger(__name__)

BACKENDS = ('auto', 'tensorrt', 'onnxruntime', 'openvino', 'torch')

# model file kind -> backends that can run it
RUNS = {'onnx': ('tensorrt', 'onnxruntime', 'openvino'), 'engine': ('tensorrt',),
        'pth': ('torch',)}


def model_kind(path):
    """Return 'onnx', 'engine' or 'pth' from a model file's suffix."""
    suffix = str(path).lower().rsplit('.', 1)[-1]
    kinds = {'onnx': 'onnx', 'engine': 'engine', 'plan': 'engine', 'trt': 'engine',
             'pth': 'pth', 'pt': 'pth'}
    if suffix not in kinds:
        raise ValueError(f'cannot tell the model type of {path}: use a .onnx graph, a TensorRT '
                         '.engine/.plan file or a .pth checkpoint')
    return kinds[suffix]


def tensorrt_usable():
    """Return (ok, why) telling whether TensorRT and a CUDA device are present (no import of
    tensorrt when it is not installed)."""
    if importlib.util.find_spec('tensorrt') is None:
        return False, 'tensorrt is not installed'
    from .cuda_memory import device_count
    if device_count() == 0:
        return False, 'tensorrt is installed but no CUDA device is visible'
    return True, 'tensorrt and a CUDA device are available'


def choose(backend, kind, device=None, ort_provider='auto'):
    """Return (backend name, device, one-line reason) for ``backend`` on a model of ``kind``.

    'auto' prefers, for ONNX graphs, the tensorrt backend > onnxruntime's TensorRT provider >
    its CUDA provider > onnxruntime on CPU; ``device='cpu'`` forces the CPU. 'auto' never
    picks openvino (asked for by name: its bf16 is the fast path on CPUs with native bf16). An
    ``ort_provider`` other than 'auto' asks for onnxruntime with that provider.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
    if ort_provider != 'auto' and (backend not in ('auto', 'onnxruntime') or kind != 'onnx'):
        raise ValueError(f'ort_provider {ort_provider} applies to the onnxruntime backend on '
                         f'an .onnx graph, not to backend {backend} with a .{kind} model; set '
                         'ort_provider to auto')
    if backend != 'auto':
        if backend not in RUNS[kind]:
            raise ValueError(f'the {backend} backend cannot run a .{kind} model; it runs with '
                             f'{" or ".join(RUNS[kind])} (export ONNX with rtmo-export)')
        return backend, device, f'backend {backend} requested'
    if ort_provider != 'auto':
        return ('onnxruntime', 'cpu' if ort_provider == 'cpu' else device,
                f'ort_provider {ort_provider} requested')
    if kind == 'engine':
        return 'tensorrt', device, 'a serialized TensorRT engine runs only with tensorrt'
    if kind == 'pth':
        return 'torch', device, 'a .pth checkpoint runs only with the torch backend'
    if device is not None and device.lower() == 'cpu':
        return 'onnxruntime', 'cpu', 'device cpu requested: onnxruntime on CPU'
    ok, why = tensorrt_usable()
    if ok:
        return 'tensorrt', device, why
    from .onnxruntime_backend import available_providers
    found = available_providers()
    if 'tensorrt' in found:
        return 'onnxruntime', device or 'cuda', f'{why}; onnxruntime has the TensorRT provider'
    if 'cuda' in found:
        return 'onnxruntime', device or 'cuda', f'{why}; onnxruntime has CUDA'
    return 'onnxruntime', 'cpu', f'{why} and onnxruntime has no CUDA provider: CPU'


def create_backend(name, path, device=None, precision='fp16', cache_dir=None,
                   num_threads=None, score_thr=0.1, nms_thr=0.65, ort_provider='auto',
                   progress=None):
    """Create backend ``name`` ('tensorrt' | 'onnxruntime' | 'openvino' | 'torch') for the model
    at ``path``."""
    if name == 'onnxruntime':
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(path, device=device, num_threads=num_threads,
                                  precision=precision, cache_dir=cache_dir,
                                  provider=ort_provider)
    if name == 'openvino':
        from .openvino_backend import OpenVinoBackend
        return OpenVinoBackend(path, device=device, num_threads=num_threads,
                               precision=precision, cache_dir=cache_dir)
    if name == 'tensorrt':
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(path, device=device, precision=precision, cache_dir=cache_dir,
                               progress=progress)
    if name == 'torch':
        from .torch_backend import TorchBackend
        return TorchBackend(path, device=device, precision=precision, score_thr=score_thr,
                            nms_thr=nms_thr, num_threads=num_threads)
    raise BackendUnavailable(f'unknown backend {name!r}')
