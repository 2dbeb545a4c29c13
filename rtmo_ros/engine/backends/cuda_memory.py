"""Raw CUDA device buffers and one stream, through cuda-python or else torch.

TensorRT needs device pointers and a stream handle; either library provides them. cuda-python
is the lighter choice on Jetson (``pip install cuda-python``); torch is used when it is the one
installed. Both are imported lazily.
"""
import numpy as np

from . import BackendUnavailable

NO_CUDA = ('the tensorrt backend needs a CUDA device and cuda-python or torch with CUDA to '
           'reach it: {why}; install cuda-python (pip install cuda-python) or use '
           "backend='onnxruntime'")


def _cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
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
        raise RuntimeError(f'CUDA error {err}')
    return values[0] if len(values) == 1 else values


def device_count():
    """Number of visible CUDA devices (0 when neither cuda-python nor torch can tell)."""
    cudart = _cudart()
    if cudart is not None:
        try:
            return _check(cudart.cudaGetDeviceCount())
        except RuntimeError:
            return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class CudaPythonMemory:
    """Device memory and a stream on device ``index`` through cuda-python's runtime API."""

    def __init__(self, index):
        self.rt = _cudart()
        _check(self.rt.cudaSetDevice(index))
        props = _check(self.rt.cudaGetDeviceProperties(index))
        name = props.name
        self.gpu_name = (name.decode() if isinstance(name, bytes) else str(name)).strip('\0 ')
        self.capability = (props.major, props.minor)
        self.stream = _check(self.rt.cudaStreamCreate())
        self.stream_handle = int(self.stream)

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
        self.rt.cudaStreamDestroy(self.stream)


class TorchMemory:
    """The same interface on top of torch tensors (kept alive by pointer)."""

    def __init__(self, index):
        import torch
        self.torch = torch
        self.device = torch.device('cuda', index)
        self.gpu_name = torch.cuda.get_device_name(self.device)
        self.capability = torch.cuda.get_device_capability(self.device)
        self.stream = torch.cuda.Stream(self.device)
        self.stream_handle = self.stream.cuda_stream
        self.buffers = {}

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

    Raises BackendUnavailable (one sentence with the fix) when no CUDA device can be reached.
    """
    count = device_count()
    if count == 0:
        why = ('no CUDA device is visible' if _cudart() is not None or _has_torch()
               else 'neither cuda-python nor torch is installed')
        raise BackendUnavailable(NO_CUDA.format(why=why))
    if index >= count:
        raise BackendUnavailable(NO_CUDA.format(why=f'CUDA device {index} does not exist '
                                                f'({count} visible)'))
    return CudaPythonMemory(index) if _cudart() is not None else TorchMemory(index)


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
