"""Raw CUDA device buffers and one stream, through cuda-python or else torch.

TensorRT needs device pointers and a stream handle; either library provides them. cuda-python
is the lighter choice on Jetson; its major version must match the driver's CUDA major
(cuda-python 13 does not run on a CUDA 12 driver such as JetPack 6's: ``pip install
'cuda-python<13'`` there). When cuda-python cannot reach the device and torch can, torch is
used. Both are imported lazily; ``cuda.bindings.runtime`` (cuda-bindings >= 12.6, the only one
in 13) is preferred to the older ``cuda.cudart``.

CUDA's current device is per thread: the backend is created in one thread (the node's
configure) and run in another (its worker), so each memory object has ``select()``, which the
backend calls at the start of every inference.
"""
import logging

import numpy as np

from . import BackendUnavailable

LOG = logging.getLogger(__name__)

NO_CUDA = ('the tensorrt backend needs a CUDA device and cuda-python or torch with CUDA to '
           'reach it: {why}; install cuda-python matching the driver\'s CUDA major (pip install '
           "'cuda-python<13' for CUDA 12, e.g. JetPack 6) or use backend='onnxruntime'")


def _cudart():
    try:
        from cuda.bindings import runtime  # cuda-bindings >= 12.6 (cuda.cudart is gone in 13)
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python
        return cudart
    except ImportError:
        return None


def _check(result):
    """Unpack a cuda-python (err, *values) tuple, raising on a CUDA error."""
    err, values = result[0], result[1:]
    if int(err) != 0:
        raise RuntimeError(f'CUDA error {getattr(err, "name", err)}')
    return values[0] if len(values) == 1 else values


def _cuda_version(number):
    """CUDA's integer version (12060) -> '12.6'."""
    return f'{number // 1000}.{number % 1000 // 10}'


def cuda_error_text(rt, err):
    """Name a cuda-python error with the driver's and cuda-python's CUDA versions and the fix.

    The usual case: cuda-python 13 (what ``pip install cuda-python`` gives) on a CUDA 12 driver
    reports cudaErrorInsufficientDriver.
    """
    name = getattr(err, 'name', None) or str(err)
    try:
        driver = int(rt.cudaDriverGetVersion()[1])
        runtime = int(rt.cudaRuntimeGetVersion()[1])
    except Exception:  # noqa: BLE001 - the versions only improve the message
        return f'cuda-python reports {name}'
    text = (f'cuda-python reports {name} (the driver supports CUDA {_cuda_version(driver)}, '
            f'cuda-python is built for CUDA {_cuda_version(runtime)})')
    if driver and driver // 1000 < runtime // 1000:
        text += (f"; pin cuda-python to the driver's CUDA major: pip install "
                 f"'cuda-python<{driver // 1000 + 1}'")
    return text


def cudart_device_count(rt):
    """Return (count, None) or (0, why) from cuda-python's cudaGetDeviceCount."""
    result = rt.cudaGetDeviceCount()
    if int(result[0]) != 0:
        return 0, cuda_error_text(rt, result[0])
    return int(result[1]), None


def _torch_device_count():
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_count():
    """Number of visible CUDA devices: cuda-python's count, else torch's (0 when neither)."""
    rt = _cudart()
    count = cudart_device_count(rt)[0] if rt is not None else 0
    return count or _torch_device_count()


def stream_pointer(stream):
    """A cudaStream_t as an int: ``getPtr()`` (``int()`` is deprecated in cuda-bindings 13)."""
    return int(stream.getPtr()) if hasattr(stream, 'getPtr') else int(stream)


class CudaPythonMemory:
    """Device memory and a stream on device ``index`` through cuda-python's runtime API."""

    def __init__(self, index, rt=None):
        self.rt = rt or _cudart()
        self.index = index
        self.select()
        props = _check(self.rt.cudaGetDeviceProperties(index))
        name = props.name
        self.gpu_name = (name.decode() if isinstance(name, bytes) else str(name)).strip('\0 ')
        self.capability = (props.major, props.minor)
        self.stream = _check(self.rt.cudaStreamCreate())
        self.stream_handle = stream_pointer(self.stream)

    def select(self):
        """Make this device current in the calling thread (CUDA's current device is per thread)."""
        _check(self.rt.cudaSetDevice(self.index))

    def alloc(self, nbytes):
        return int(_check(self.rt.cudaMalloc(max(int(nbytes), 1))))

    def free(self, ptr):
        self.rt.cudaFree(ptr)

    def h2d(self, ptr, array):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream))

    def d2h(self, array, ptr):
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream))

    def sync(self):
        _check(self.rt.cudaStreamSynchronize(self.stream))

    def close(self):
        self.select()
        self.rt.cudaStreamDestroy(self.stream)


class TorchMemory:
    """The same interface on top of torch tensors (kept alive by pointer)."""

    def __init__(self, index):
        import torch
        self.torch = torch
        self.index = index
        self.device = torch.device('cuda', index)
        self.select()
        self.gpu_name = torch.cuda.get_device_name(self.device)
        self.capability = torch.cuda.get_device_capability(self.device)
        self.stream = torch.cuda.Stream(self.device)
        self.stream_handle = self.stream.cuda_stream
        self.buffers = {}

    def select(self):
        """Make this device current in the calling thread (TensorRT runs on the current one)."""
        self.torch.cuda.set_device(self.index)

    def alloc(self, nbytes):
        tensor = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8,
                                  device=self.device)
        self.buffers[tensor.data_ptr()] = tensor
        return tensor.data_ptr()

    def free(self, ptr):
        self.buffers.pop(ptr, None)

    def h2d(self, ptr, array):
        src = self.torch.from_numpy(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self.stream):
            self.buffers[ptr][:array.nbytes].copy_(src, non_blocking=True)

    def d2h(self, array, ptr):
        with self.torch.cuda.stream(self.stream):
            data = self.buffers[ptr][:array.nbytes].cpu()  # waits for the stream
        array.reshape(-1).view(np.uint8)[:] = data.numpy()

    def sync(self):
        self.stream.synchronize()

    def close(self):
        self.buffers.clear()
        self.torch.cuda.empty_cache()


def open_device(index=0):
    """Return a CudaPythonMemory or TorchMemory for CUDA device ``index``.

    cuda-python is preferred; when it cannot reach the device (a CUDA error such as a
    cuda-python built for a newer CUDA than the driver's) and torch can, torch's buffers are
    used with a warning that names the error. Raises BackendUnavailable (one sentence with the
    fix) when neither reaches the device.
    """
    rt = _cudart()
    why = None
    if rt is not None:
        count, why = cudart_device_count(rt)
        if why is None and index < count:
            return CudaPythonMemory(index, rt)
        if why is None:
            why = f'CUDA device {index} does not exist ({count} visible)'
    torch_count = _torch_device_count()
    if index < torch_count:
        if why is not None:
            LOG.warning('rtmo: %s; using torch for the TensorRT buffers', why)
        return TorchMemory(index)
    if why is None:
        why = (f'CUDA device {index} does not exist ({torch_count} visible)' if torch_count
               else 'no CUDA device is visible' if _has_torch()
               else 'neither cuda-python nor torch is installed')
    raise BackendUnavailable(NO_CUDA.format(why=why))


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
