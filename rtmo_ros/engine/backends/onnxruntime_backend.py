"""ONNX Runtime backend: CPU by default, the CUDA execution provider when asked for."""
import logging
import os

import numpy as np

from . import Backend, BackendUnavailable

LOG = logging.getLogger(__name__)

# IoU threshold of the NMS inside the official graphs: mmdeploy takes it from the model's
# test_cfg (nms_thr=0.65 in every RTMO config) when exporting; it cannot change afterwards.
GRAPH_NMS_THR = 0.65


def import_onnxruntime():
    """Return the onnxruntime module or raise BackendUnavailable with the install command."""
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailable(
            'the onnxruntime backend needs the onnxruntime package: pip install onnxruntime '
            f'(or onnxruntime-gpu for CUDA) ({err})') from None
    return onnxruntime


def cuda_provider_available():
    """Return True when onnxruntime is installed with its CUDA execution provider."""
    try:
        ort = import_onnxruntime()
    except BackendUnavailable:
        return False
    return 'CUDAExecutionProvider' in ort.get_available_providers()


def providers_for(device):
    """Map a device string ('cpu', 'cuda', 'cuda:1', None = cpu) to an ORT provider list."""
    device = (device or 'cpu').lower()
    if device == 'cpu':
        return ['CPUExecutionProvider']
    if device.startswith('cuda'):
        if not cuda_provider_available():
            raise BackendUnavailable(
                f'device {device!r} needs onnxruntime with the CUDA execution provider: '
                'pip uninstall onnxruntime && pip install onnxruntime-gpu')
        index = int(device.split(':')[1]) if ':' in device else 0
        return [('CUDAExecutionProvider', {'device_id': index}), 'CPUExecutionProvider']
    raise ValueError(f'unknown device {device!r} for onnxruntime; use cpu, cuda or cuda:N')


class OnnxRuntimeBackend(Backend):
    """An ONNX Runtime session over an RTMO graph with inputs ``input`` and outputs
    ``dets`` (B, N, 5) and ``keypoints`` (B, N, K, 3) (mmdeploy's contract).

    ``num_threads`` sets ``intra_op_num_threads`` (None: ONNX Runtime's default, one per core).
    Input size and keypoint count are read from the graph. ``precision='int8'`` runs the
    int8 (QDQ) graph of ``onnx_path`` made by ``quantize.int8_path`` (calibrated and cached in
    ``cache_dir`` on first use); any other precision runs the graph as it is (fp32).
    """

    name = 'onnxruntime'
    precision = 'fp32'
    graph_nms_thr = GRAPH_NMS_THR

    def __init__(self, onnx_path, device=None, num_threads=None, precision='fp32',
                 cache_dir=None):
        ort = import_onnxruntime()
        if precision == 'int8':
            from ..quantize import int8_path
            onnx_path = int8_path(onnx_path, cache_dir)
            self.precision = 'int8'
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = providers_for(device)
        try:
            self.session = ort.InferenceSession(os.fspath(onnx_path), options,
                                                providers=providers)
        except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail...)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f'{onnx_path} is not a loadable ONNX model ({first}); download it '
                             'again or re-export it with rtmo-export') from None
        self.device = 'cuda' if providers[0] != 'CPUExecutionProvider' else 'cpu'
        self._read_io()

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
