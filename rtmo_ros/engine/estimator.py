"""PoseEstimator: BGR image(s) in, :class:`Poses` out, on any backend."""
from dataclasses import dataclass
import logging
import os
import pathlib
import time

import numpy as np

from . import postprocess
from .backends.onnxruntime_backend import check_provider
from .backends.select import choose, create_backend, model_kind
from .preprocess import check_image, letterbox_image
from .skeleton import skeleton_for

LOG = logging.getLogger(__name__)
PRECISIONS = ('fp16', 'fp32', 'int8', 'bf16')
INT8_BACKENDS = ('onnxruntime',)  # static QDQ quantization with ONNX Runtime's tools
BF16_BACKENDS = ('openvino',)  # ONNX's Conv takes no bf16: only OpenVINO's CPU plugin runs it


@dataclass(frozen=True)
class StageTimes:
    """Wall-clock milliseconds of the stages of the last call (for a batch: the whole batch)."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self):
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


def resolve_model(model, backend='auto'):
    """Return (path, display name) for a zoo name or a model file path.

    Zoo names download their ONNX graph (or, for ``backend='torch'`` or entries without an
    official ONNX, their checkpoint) into the model cache first (see ``download``).
    """
    text = os.fspath(model)
    suffixes = ('.onnx', '.engine', '.plan', '.trt', '.pth', '.pt')
    if isinstance(model, pathlib.PurePath) or os.sep in text or text.lower().endswith(suffixes):
        path = pathlib.Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'model file {path} does not exist; pass an existing '
                                    '.onnx/.engine/.plan/.pth file or a zoo name')
        return path, path.stem
    from . import download, zoo
    if text == zoo.BUNDLED_NAME:
        return resolve_model(zoo.bundled_path())[0], text
    entry = zoo.get(text)
    return download.fetch_entry(entry, prefer_checkpoint=(backend == 'torch')), entry.name


def check_precision(precision, backend):
    """Raise ValueError unless ``precision`` is known and ``backend`` (or 'auto') runs it."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if precision == 'int8' and backend not in INT8_BACKENDS + ('auto',):
        raise ValueError(f'precision int8 runs only on the {" or ".join(INT8_BACKENDS)} '
                         f'backend (CPU, a calibrated QDQ graph), not on {backend}')
    if precision == 'bf16' and backend not in BF16_BACKENDS:
        raise ValueError(f'precision bf16 runs only on the {" or ".join(BF16_BACKENDS)} '
                         f'backend (a CPU with native bf16), not on {backend}; set backend '
                         'openvino')


class PoseEstimator:
    """Multi-person 2-D pose estimation with RTMO on ONNX Runtime, TensorRT or PyTorch.

    ``model``: a zoo name (``rtmo_ros.engine.zoo.names()``), an ``.onnx`` graph, a serialized
    TensorRT engine (``.engine``/``.plan``) or a ``.pth`` checkpoint (torch backend).
    ``backend``: 'auto' (tensorrt > onnxruntime CUDA > onnxruntime CPU), 'tensorrt',
    'onnxruntime', 'openvino' (CPU only, never picked by 'auto') or 'torch'. ``score_thr``:
    keep people with score > this. ``nms_thr``: IoU threshold of NMS; the official graphs
    already run NMS at 0.65, fixed at export time, so a lower value adds a second NMS and a
    higher one has no effect. ``max_persons``: keep at most that many (None: all the graph
    returns, at most 50 for the official graphs). ``precision``: 'fp16' or 'fp32' for TensorRT
    and torch on CUDA (ONNX Runtime and OpenVINO run fp32), 'int8' for ONNX Runtime only: the
    graph's int8 twin, calibrated once on synthetic people and cached
    (``quantize.int8_path``), never chosen by default; or 'bf16' for OpenVINO on a CPU with
    native bf16. ``cache_dir``: TensorRT engine, int8 graph and OpenVINO cache.
    ``num_threads``: CPU threads (ONNX Runtime, OpenVINO, torch). ``ort_provider``: ONNX
    Runtime's execution provider, 'auto' | 'cpu' | 'cuda' | 'tensorrt' (see
    ``backends.onnxruntime_backend``); anything but 'auto' implies the onnxruntime backend.
    ``progress``: called with one line of text per step of a long start (a TensorRT build).
    """

    def __init__(self, model, backend='auto', device=None, score_thr=0.1, nms_thr=0.65,
                 max_persons=None, precision='fp16', cache_dir=None, num_threads=None,
                 ort_provider='auto', progress=None):
        check_precision(precision, backend)
        check_provider(ort_provider, device, precision)
        if max_persons is not None and max_persons < 0:
            raise ValueError(f'max_persons must be >= 0 or None, got {max_persons}')
        path, self.model_name = resolve_model(model, backend)
        name, device, why = choose(backend, model_kind(path), device, ort_provider)
        check_precision(precision, name)
        LOG.info('rtmo: backend %s (%s)', name, why)
        self.backend_reason = why
        self.device = device
        self.score_thr, self.nms_thr, self.max_persons = score_thr, nms_thr, max_persons
        self._backend = create_backend(name, path, device=device, precision=precision,
                                       cache_dir=cache_dir, num_threads=num_threads,
                                       score_thr=score_thr, nms_thr=nms_thr,
                                       ort_provider=ort_provider, progress=progress)
        self._inputs = np.empty((0, 3) + self.input_size[::-1], np.float32)
        self.timings = StageTimes()

    # -- properties the ROS node reads -------------------------------------------------------
    @property
    def backend(self):
        """Name of the backend in use: 'tensorrt', 'onnxruntime', 'openvino' or 'torch'."""
        return self._live().name

    @property
    def precision(self):
        """'fp16', 'fp32', 'int8' or 'bf16', what the backend actually runs."""
        return self._live().precision

    @property
    def hardware_id(self):
        """'<backend>:<device>', e.g. 'onnxruntime:cpu', 'tensorrt:cuda:0:<GPU name>'."""
        backend = self._live()
        gpu = getattr(getattr(backend, 'cuda', None), 'gpu_name', None)  # TensorRT
        if gpu is not None:
            from .backends.tensorrt_backend import device_index
            return f'{backend.name}:cuda:{device_index(self.device)}:{gpu}'
        device = str(getattr(backend, 'device', 'cpu'))
        if device.startswith('cuda') and ':' not in device:
            device += ':0'
        return f'{backend.name}:{device}'

    @property
    def max_batch(self):
        """Most images one inference call takes (None: any); ``batch`` splits larger lists."""
        return self._live().max_batch

    @property
    def ort_provider(self):
        """ONNX Runtime's provider in use ('cpu', 'cuda', 'tensorrt'); None on other backends."""
        return getattr(self._live(), 'provider', None)

    @property
    def input_size(self):
        """Network input size (W, H) in pixels."""
        return tuple(self._live().input_size)

    @property
    def num_keypoints(self):
        return self._live().num_keypoints

    @property
    def skeleton(self):
        """The :class:`~rtmo_ros.engine.skeleton.Skeleton` matching ``num_keypoints``."""
        return skeleton_for(self.num_keypoints)

    def _live(self):
        if self._backend is None:
            raise RuntimeError('this PoseEstimator was closed; create a new one')
        return self._backend

    # -- inference ---------------------------------------------------------------------------
    def __call__(self, image_bgr):
        """Estimate the poses in one (H, W, 3) uint8 BGR image; return :class:`Poses`."""
        return self.batch([image_bgr])[0]

    def batch(self, images_bgr):
        """Estimate poses in several BGR images with one inference call; return [Poses].

        Images may differ in size. Backends with a fixed batch size run in chunks of it.
        """
        backend = self._live()
        images = list(images_bgr)
        for image in images:
            check_image(image)
        if not images:
            return []
        t0 = time.perf_counter()
        inputs, boxes = self._preprocess(images)
        t1 = time.perf_counter()
        step = backend.max_batch or len(images)
        raw = []
        for start in range(0, len(images), step):
            raw.extend(backend.infer(inputs[start:start + step]))
        t2 = time.perf_counter()
        extra_nms = self._extra_nms_thr(backend)
        poses = [postprocess.to_poses(dets, kpts, box, backend.input_size, self.score_thr,
                                      extra_nms, self.max_persons)
                 for (dets, kpts), box in zip(raw, boxes)]
        t3 = time.perf_counter()
        self.timings = StageTimes(1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2))
        return poses

    def _preprocess(self, images):
        """Warp every image into the reused (B, 3, H, W) input buffer; return (view, boxes)."""
        count = len(images)
        if self._inputs.shape[0] < count:
            self._inputs = np.empty((count, 3) + self.input_size[::-1], np.float32)
        boxes = [letterbox_image(image, self.input_size, out=self._inputs[i])[1]
                 for i, image in enumerate(images)]
        return self._inputs[:count], boxes

    def _extra_nms_thr(self, backend):
        """Threshold of a second NMS, needed only when the user asks for a stricter one."""
        graph = backend.graph_nms_thr
        if graph is not None and self.nms_thr is not None and self.nms_thr < graph:
            return self.nms_thr
        return None

    def close(self):
        """Free the backend (session, engine, GPU memory). Calling it twice is harmless."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self._backend is None:
            return f'PoseEstimator({self.model_name!r}, closed)'
        return (f'PoseEstimator({self.model_name!r}, backend={self.backend!r}, '
                f'precision={self.precision!r}, input_size={self.input_size})')
