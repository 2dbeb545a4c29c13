"""Engine I/O for the TensorRT backend: named tensors (TensorRT >= 8.5) or bindings (older).

Both classes expose ``input_size`` (W, H), ``max_batch``, ``num_keypoints``,
``run(inputs (B, 3, H, W) float32) -> (dets (B, N, 5), keypoints (B, N, K, 3))`` and ``free()``.
Inputs are cast to the engine's input dtype (an engine built elsewhere may take fp16); outputs
come back float32. A batch above the optimisation profile's maximum raises ValueError.
"""
import numpy as np

OUTPUTS = ('dets', 'keypoints')


def make_io(trt, engine, context, cuda):
    """Return the I/O helper for this TensorRT version's API."""
    if hasattr(engine, 'num_io_tensors'):
        return NamedIO(trt, engine, context, cuda)
    return BindingIO(trt, engine, context, cuda)


class _Buffer:
    """A device buffer that grows on demand."""

    def __init__(self, cuda):
        self.cuda, self.ptr, self.size = cuda, None, 0

    def ensure(self, nbytes):
        """Return a device pointer to at least ``nbytes`` (never None: 0 bytes get 1)."""
        if nbytes > self.size or self.ptr is None:
            self.free()
            self.ptr, self.size = self.cuda.alloc(nbytes), nbytes
        return self.ptr

    def free(self):
        if self.ptr is not None:
            self.cuda.free(self.ptr)
            self.ptr, self.size = None, 0


def _check_outputs(names):
    missing = set(OUTPUTS) - set(names)
    if missing:
        raise ValueError(f'the engine is not an RTMO pose-detection engine: outputs {names} '
                         f'lack {sorted(missing)}')


def _too_large(batch, max_batch):
    return ValueError(f'batch {batch} is above the TensorRT engine\'s optimisation-profile '
                      f'maximum {max_batch}: pass at most {max_batch} images per call or '
                      'rebuild the engine with a larger profile')


def _make_allocator(trt, cuda):
    """An IOutputAllocator: outputs whose size the NMS decides are allocated by TensorRT's
    request, and their final shapes recorded."""

    class Allocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffers = {name: _Buffer(cuda) for name in OUTPUTS}
            self.shapes = {}

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return self.buffers[tensor_name].ensure(size)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(shape)

    return Allocator()


class NamedIO:
    """``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` with an output
    allocator for the data-dependent output shapes."""

    def __init__(self, trt, engine, context, cuda):
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        _check_outputs(names)
        self.input = next(n for n in names
                          if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.context, self.cuda = context, cuda
        shape = tuple(engine.get_tensor_shape(self.input))
        self.input_size = (shape[3], shape[2])
        self.max_batch = shape[0] if shape[0] > 0 else tuple(
            engine.get_tensor_profile_shape(self.input, 0)[2])[0]
        self.num_keypoints = tuple(engine.get_tensor_shape('keypoints'))[2]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
                       for n in OUTPUTS + (self.input,)}
        self.in_buffer = _Buffer(cuda)
        self.allocator = _make_allocator(trt, cuda)
        for name in OUTPUTS:
            context.set_output_allocator(name, self.allocator)

    def run(self, inputs):
        inputs = np.ascontiguousarray(inputs, self.dtypes[self.input])
        if not self.context.set_input_shape(self.input, inputs.shape):
            raise _too_large(inputs.shape[0], self.max_batch)
        ptr = self.in_buffer.ensure(inputs.nbytes)
        self.cuda.h2d(ptr, inputs)
        self.context.set_tensor_address(self.input, ptr)
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise RuntimeError('TensorRT execute_async_v3 failed; see the TensorRT messages')
        self.cuda.sync()
        outputs = []
        for name in OUTPUTS:
            shape = self.allocator.shapes.get(name) or tuple(self.context.get_tensor_shape(name))
            array = np.empty(shape, self.dtypes[name])
            self.cuda.d2h(array, self.allocator.buffers[name].ptr)
            outputs.append(array)
        self.cuda.sync()
        return [o.astype(np.float32, copy=False) for o in outputs]

    def free(self):
        self.in_buffer.free()
        for buffer in self.allocator.buffers.values():
            buffer.free()


class BindingIO:
    """Binding-index API of TensorRT < 8.5 (``execute_async_v2``); static output shapes only."""

    def __init__(self, trt, engine, context, cuda):
        names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        _check_outputs(names)
        self.trt, self.engine, self.context, self.cuda = trt, engine, context, cuda
        self.index = {n: i for i, n in enumerate(names)}
        self.input = next(i for i in range(len(names)) if engine.binding_is_input(i))
        shape = tuple(engine.get_binding_shape(self.input))
        self.input_size = (shape[3], shape[2])
        self.max_batch = shape[0] if shape[0] > 0 else tuple(
            engine.get_profile_shape(0, self.input)[2])[0]
        self.num_keypoints = tuple(engine.get_binding_shape(self.index['keypoints']))[2]
        self.input_dtype = np.dtype(trt.nptype(engine.get_binding_dtype(self.input)))
        self.buffers = [_Buffer(cuda) for _ in names]

    def run(self, inputs):
        inputs = np.ascontiguousarray(inputs, self.input_dtype)
        if not self.context.set_binding_shape(self.input, inputs.shape):
            raise _too_large(inputs.shape[0], self.max_batch)
        self.cuda.h2d(self.buffers[self.input].ensure(inputs.nbytes), inputs)
        arrays = {}
        for name in OUTPUTS:
            i = self.index[name]
            shape = tuple(self.context.get_binding_shape(i))
            if min(shape) < 0:
                raise RuntimeError(f'output {name} has a data-dependent shape {shape}, which '
                                   'needs TensorRT >= 8.5 (named I/O tensors)')
            dtype = np.dtype(self.trt.nptype(self.engine.get_binding_dtype(i)))
            arrays[name] = np.empty(shape, dtype)
            self.buffers[i].ensure(arrays[name].nbytes)
        bindings = [b.ptr or 0 for b in self.buffers]
        if not self.context.execute_async_v2(bindings, self.cuda.stream_handle):
            raise RuntimeError('TensorRT execute_async_v2 failed; see the TensorRT messages')
        for name, array in arrays.items():
            self.cuda.d2h(array, self.buffers[self.index[name]].ptr)
        self.cuda.sync()
        return [arrays[n].astype(np.float32, copy=False) for n in OUTPUTS]

    def free(self):
        for buffer in self.buffers:
            buffer.free()
