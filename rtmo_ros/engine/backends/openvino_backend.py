"""OpenVINO backend: an RTMO ONNX graph compiled by OpenVINO's CPU plugin.

The same graphs as the onnxruntime backend (mmdeploy's contract, NMS inside), on the CPU only.
At fp32 it ran RTMO-s no faster than ONNX Runtime here (1.02-1.06x its time, ``bench_engine``,
``bench_bf16``), with the same outputs to 5e-4 px; bf16 ran 1.76x faster. ``precision``:

* 'fp32' (and 'fp16', which only GPU backends honour, as with onnxruntime): OpenVINO's
  ``INFERENCE_PRECISION_HINT`` f32. OpenVINO's own default is bf16 on a CPU with native bf16,
  which would change the numbers without being asked for, so f32 is always set.
* 'bf16': bf16 inference on a CPU that computes it natively (AVX512-BF16 or AMX; OpenVINO lists
  'BF16' among the CPU's capabilities); refused on other CPUs, where it would be emulated.

Compiled models are cached by OpenVINO under ``<engine cache>/openvino`` when it is writable.
"""
import logging
import os

import numpy as np

from . import Backend, BackendUnavailable, not_loadable
from .onnxruntime_backend import GRAPH_NMS_THR

PRECISION_HINTS = {'fp32': 'f32', 'fp16': 'f32', 'bf16': 'bf16'}


def import_openvino():
    """Return the openvino module or raise BackendUnavailable with the install command."""
    try:
        import openvino
    except ImportError as err:
        raise BackendUnavailable('the openvino backend needs the openvino package: pip install '
                                 f'openvino ({err})') from None
    return openvino


def cpu_has_bf16(core):
    """True when OpenVINO's CPU plugin computes bf16 natively on this CPU."""
    return 'BF16' in core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


def openvino_cache(cache_dir=None):
    """``<engine cache>/openvino``, created; None when it cannot be written."""
    from ..engine_cache import writable_subfolder
    return writable_subfolder(cache_dir, 'openvino', 'OpenVINO compiles the model at every '
                              'start', level=logging.INFO)


class OpenVinoBackend(Backend):
    """An OpenVINO compiled model over an RTMO graph with input ``input`` (B, 3, H, W) and
    outputs ``dets`` (B, N, 5) and ``keypoints`` (B, N, K, 3).

    ``num_threads`` sets ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, one per core).
    """

    name = 'openvino'
    graph_nms_thr = GRAPH_NMS_THR

    def __init__(self, onnx_path, device=None, num_threads=None, precision='fp32',
                 cache_dir=None):
        if (device or 'cpu').lower() != 'cpu':
            raise ValueError(f'the openvino backend runs on the cpu, not {device!r}; use '
                             'backend tensorrt or onnxruntime for a GPU')
        if precision not in PRECISION_HINTS:
            raise ValueError(f'the openvino backend runs fp32 or bf16, not {precision!r}')
        ov = import_openvino()
        core = ov.Core()
        if precision == 'bf16' and not cpu_has_bf16(core):
            raise BackendUnavailable('precision bf16 needs a CPU that computes bf16 natively '
                                     '(AVX512-BF16 or AMX); this one does not: use fp32')
        config = {'INFERENCE_PRECISION_HINT': PRECISION_HINTS[precision],
                  'PERFORMANCE_HINT': 'LATENCY'}
        if num_threads:
            config['INFERENCE_NUM_THREADS'] = int(num_threads)
        folder = openvino_cache(cache_dir)
        if folder is not None:
            config['CACHE_DIR'] = str(folder)
        try:
            model = core.read_model(os.fspath(onnx_path))
        except (RuntimeError, ValueError) as err:
            raise not_loadable(onnx_path, err) from None
        self._read_io(model)  # not an RTMO graph: its own ValueError
        try:
            self.compiled = core.compile_model(model, 'CPU', config)
        except RuntimeError as err:
            raise not_loadable(onnx_path, err) from None
        self.request = self.compiled.create_infer_request()
        self.precision = 'bf16' if precision == 'bf16' else 'fp32'
        self.device = 'cpu'
        if self.num_keypoints is None:  # symbolic K: ask the model once
            probe = np.zeros((1, 3, self.input_size[1], self.input_size[0]), np.float32)
            self.num_keypoints = self.infer(probe)[0][1].shape[1]

    def _read_io(self, model):
        names = {name for out in model.outputs for name in out.get_names()}
        if len(model.inputs) != 1 or model.inputs[0].get_partial_shape().rank.get_length() != 4 \
                or not {'dets', 'keypoints'} <= names:
            raise ValueError('the ONNX graph is not an RTMO pose-detection graph: expected one '
                             'input (B, 3, H, W) and outputs dets, keypoints; got '
                             f'{len(model.inputs)} input(s) -> {sorted(names)}')
        batch, _, height, width = model.inputs[0].get_partial_shape()
        if not (height.is_static and width.is_static):
            raise ValueError('the ONNX input has no fixed spatial size; RTMO graphs are '
                             'exported at a fixed size (640 or 416)')
        self.input_size = (width.get_length(), height.get_length())
        self.max_batch = batch.get_length() if batch.is_static else None
        kpts = model.output('keypoints').get_partial_shape()[2]
        self.num_keypoints = kpts.get_length() if kpts.is_static else None
        self._outputs = (model.output('dets').get_any_name(),
                         model.output('keypoints').get_any_name())

    def infer(self, inputs):
        """Run the model on (B, 3, H, W) float32; return [(dets, keypoints)] per image."""
        self.request.infer({0: inputs})
        dets, kpts = (self.request.get_tensor(name).data.copy() for name in self._outputs)
        return list(zip(dets, kpts))

    def close(self):
        """Drop the compiled model and its request."""
        self.request = self.compiled = None
