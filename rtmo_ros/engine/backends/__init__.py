"""Inference backends: ONNX Runtime, TensorRT, OpenVINO and PyTorch behind one small contract.

Every backend turns a network-input batch into per-image raw detections:

    infer(inputs) -> list of (dets (N, 5), keypoints (N, K, 3)), one pair per image
    inputs:    (B, 3, H, W) float32, C-contiguous, BGR, 0..255 (see ``preprocess``)
    dets:      x1, y1, x2, y2, score in network-input pixels, boxes not clamped
    keypoints: x, y, score in network-input pixels

Attributes each backend sets: ``name`` ('onnxruntime' | 'tensorrt' | 'openvino' | 'torch'),
``precision`` ('fp32' | 'fp16' | 'int8' | 'bf16'), ``input_size`` (W, H), ``num_keypoints``,
``max_batch`` (None: any) and ``graph_nms_thr`` (the IoU threshold of the NMS that already ran
inside the backend, fixed at export time for graph backends; None when the backend ran NMS at
the caller's threshold). Heavy modules (onnxruntime, tensorrt, openvino, torch) are imported
only inside the backend modules, which are themselves imported only when a backend is created
(``select.create_backend``).
"""


def cuda_index(device, fix):
    """'cuda' / 'cuda:N' / None -> N; anything else raises ValueError ending with ``fix``."""
    device = (device or 'cuda').lower()
    if device == 'cuda':
        return 0
    if device.startswith('cuda:') and device[5:].isdigit():
        return int(device[5:])
    raise ValueError(f'device {device!r} is not a CUDA device; {fix}')


def not_loadable(path, err):
    """The ValueError of a model file a runtime cannot read: the first line of its error."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return ValueError(f'{path} is not a loadable ONNX model ({first}); download it again or '
                      're-export it with rtmo-export')


class BackendUnavailable(RuntimeError):
    """A backend cannot run here: its package is missing or it needs a device that is absent."""


class Backend:
    """Base of the backends: attributes of the contract above plus ``close()``."""

    name = ''
    precision = 'fp32'
    input_size = (0, 0)
    num_keypoints = 0
    max_batch = None
    graph_nms_thr = None

    def infer(self, inputs):
        """Run the network on ``inputs`` (B, 3, H, W); see the module docstring."""
        raise NotImplementedError

    def close(self):
        """Free the session / engine and its device memory; the backend is unusable after."""
