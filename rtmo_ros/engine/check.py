"""``rtmo-check``: what this machine can run, whether it runs it right, and how fast.

    rtmo-check [--model NAME|FILE.onnx] [--reference-model FILE.onnx] [--checkpoint FILE.pth]
               [--image FILE] [--repeat 20] [--skip WORD[,WORD]] [--score-thr 0.1]
               [--threads N] [--cache-dir DIR] [--json FILE]
               [--train-step [--train-device cuda]]

Lists the backends and versions it finds (ONNX Runtime and its execution providers, torch and
CUDA, TensorRT, cuda-python, OpenVINO), computes the reference (``--reference-model``, default
``--model``, on ONNX Runtime CPU fp32) on deterministic frames (rendered synthetic people when
rtmo_train is installed, else an OpenCV drawing), then builds every backend / provider /
precision this machine has and checks it against the reference: people matched by box IoU
(> 0.5), keypoint distance in image pixels over the matched people. fp32 cases pass when
they find the very same people with keypoints <= 0.05 px away; fp16, int8 and bf16 cases pass when
every person scored >= 0.5 on one side is found on the other (their drift is printed). Each
case is timed (``PoseEstimator.batch``, warm-up then ``--repeat`` calls) at batch 1 and at
batch 8 where the graph has a dynamic batch axis (torch: always).
What cannot run here is listed as skipped with the reason. Needs only the engine (numpy,
OpenCV, onnxruntime; torch for the torch cases), never rclpy: ``python -m
rtmo_ros.engine.check`` runs from the source tree.

Exit status: 0 when every case that ran passed, 1 when one failed (or the reference could not
run), 2 on bad usage.

JSON report (``--json FILE``), schema ``rtmo-check/1``. Coordinates are image pixels, times
milliseconds of wall clock; a case that did not run (``status`` 'skip') has ``parity`` and
``timing`` null, and so has every value that was not measured. When the model or the
reference cannot run, ``cases`` is empty, ``passed`` false and ``model`` / ``reference`` may be
null (the progress lines say why).

| key | type | meaning |
|---|---|---|
| ``schema`` | str | 'rtmo-check/1' |
| ``created`` | str | start of the run, ISO 8601, UTC |
| ``host`` | str | the machine's network name |
| ``inventory.python`` | str | Python version |
| ``inventory.platform`` | str | OS and processor (``platform.platform()``) |
| ``inventory.numpy`` | str | numpy version |
| ``inventory.opencv`` | str | OpenCV version |
| ``inventory.onnxruntime`` | object | ``version``, ``providers``, ``short`` (1) |
| ``inventory.torch`` | object | ``version``, ``cuda_available``, ``cuda_version``, ``devices`` |
| ``inventory.tensorrt`` | object | ``version`` |
| ``inventory.openvino`` | object | ``version``, ``bf16``: the CPU computes bf16 natively |
| ``inventory.cuda_python`` | object | ``version``, ``device_count``, ``message``, (2) |
| ``inventory.tensorrt_usable`` | object | ``ok``, ``why``: can the tensorrt backend run |
| ``inventory.rtmo_train`` | bool | rtmo_train importable (3) |
| ``model.path`` | str | the ONNX graph checked |
| ``model.sha256`` | str | its sha256 |
| ``model.input_size`` | [int, int] | network input (W, H) |
| ``model.batch`` | int or null | the graph's fixed batch size; null: dynamic |
| ``model.dynamic_batch`` | bool | batch 8 can run on the graph |
| ``model.checkpoint`` | str or null | ``--checkpoint`` (torch cases) |
| ``reference.model`` | str | the graph of the reference |
| ``reference.hardware_id`` | str | 'onnxruntime:cpu' |
| ``reference.frames`` | object | ``count``, ``size`` [W, H], ``source``, ``seed`` (4) |
| ``reference.people`` | [int] | people the reference finds in each frame |
| ``reference.build_s`` | float | seconds to create the reference session |
| ``cases[].name`` | str | '<backend>-<provider or device>-<precision>-b<batch>' |
| ``cases[].backend`` | str | 'onnxruntime', 'tensorrt', 'openvino', 'torch', 'rtmo_train' (5) |
| ``cases[].provider`` | str or null | ONNX Runtime's provider: 'cpu', 'cuda', 'tensorrt' |
| ``cases[].device`` | str | 'cpu' or 'cuda' |
| ``cases[].precision`` | str | asked for: 'fp32', 'fp16', 'int8', 'bf16' (openvino, (5)) |
| ``cases[].precision_reported`` | str or null | what the backend says it runs |
| ``cases[].provider_reported`` | str or null | ONNX Runtime's provider in use |
| ``cases[].hardware_id`` | str or null | ``PoseEstimator.hardware_id`` |
| ``cases[].batch`` | int | images per call: 1 or 8 |
| ``cases[].status`` | str | 'pass', 'fail' or 'skip' |
| ``cases[].reason`` | str | why it failed or was skipped, or a note; '' |
| ``cases[].build_s`` | float or null | seconds to create the estimator |
| ``cases[].parity`` | object or null | comparison with the reference; null: not run |
| ``cases[].parity.people_ref`` | int | people the reference finds (6) |
| ``cases[].parity.people`` | int | people this case finds (6) |
| ``cases[].parity.matched`` | int | pairs matched by box IoU > 0.5 |
| ``cases[].parity.unmatched`` | int | people on one side only that fail the case (7) |
| ``cases[].parity.kpt_max_px`` | float or null | largest keypoint distance, matched people |
| ``cases[].parity.kpt_median_px`` | float or null | median keypoint distance |
| ``cases[].parity.tolerance_px`` | float or null | 0.05 for fp32; null: drift only |
| ``cases[].timing`` | object or null | ``PoseEstimator.batch`` timing; null: not run |
| ``cases[].timing.median_ms`` | float | median time of one ``batch`` call |
| ``cases[].timing.p90_ms`` | float | its 90th percentile |
| ``cases[].timing.images_per_s`` | float | batch / median |
| ``cases[].timing.repeat`` | int | timed calls (after the warm-up) |
| ``cases[].detail`` | object or null | training step: ``losses``, ``grad_norm``, ``amp`` |
| ``passed`` | bool | every case that ran passed |

(1) ``version`` null when not importable (then ``error`` says why); ``providers``: ORT's names;
``short``: 'tensorrt', 'cuda', 'cpu' among them. The same ``version``/``error`` pair for torch,
tensorrt and openvino. (2) ``device_count`` and ``message`` (its error, e.g. a driver older
than its CUDA) from cuda-python's runtime; ``visible_devices``: cuda-python's count, else
torch's. (3) synthetic frames, the torch backend and int8 calibration need it. (4) ``source``:
'synthetic' (rtmo_train's renderer), 'drawn' or the ``--image`` path (then the frames alternate
it and its mirror image; ``seed`` null). (5) the ``--train-step`` case: one training step of
the tiny preset on a batch of 8 with AMP (fp16 on CUDA, bf16 on CPU). (6) summed over the
batch's frames. (7) fp32: any person, except near-ties at the graphs' 50-row cap; fp16, int8
and bf16: people scored >= 0.5 (near the score threshold they may flip).
"""
import argparse
from dataclasses import dataclass
import datetime
import importlib.util
import inspect
import json
import pathlib
import platform
import sys
import time

import cv2
import numpy as np

from .backends import BackendUnavailable
from .estimator import PoseEstimator, resolve_model
from .postprocess import box_iou
from .zoo import BUNDLED_NAME

SCHEMA = 'rtmo-check/1'
FP32_TOLERANCE_PX = 0.05
MATCH_IOU = 0.5
CONFIDENT_SCORE = 0.5     # fp16 / int8 must find every person the reference scores this high
CAP_TIE = 0.01            # scores this close to the last of 50 capped rows are a tie
FRAME_SIZE = (640, 480)   # (W, H): a VGA camera frame, letterboxed like a real one
FRAME_SEED = 8            # its frame 0: three people, each scored >= 0.5 by the bundled model
FRAMES = 8                # the largest batch timed; the TensorRT profile's maximum too
WARMUP_CALLS = 2          # first calls allocate buffers, autotune kernels (cuDNN, TensorRT)
# torch runs NMS without the graphs' cap; keep the graphs' top rows so the people compare
# (rtmo_train.export.MAX_DETECTIONS = mmdeploy's keep_top_k)
GRAPH_MAX_DETECTIONS = 50
ORT_NAMES = {'TensorrtExecutionProvider': 'tensorrt', 'CUDAExecutionProvider': 'cuda',
             'CPUExecutionProvider': 'cpu'}


@dataclass(frozen=True)
class Spec:
    """One engine configuration to build and check; ``provider`` for ONNX Runtime only."""

    backend: str
    provider: str
    device: str
    precision: str

    @property
    def label(self):
        return f'{self.backend}-{self.provider or self.device}-{self.precision}'


SPECS = (
    Spec('onnxruntime', 'cpu', 'cpu', 'fp32'),
    Spec('onnxruntime', 'cpu', 'cpu', 'int8'),
    Spec('onnxruntime', 'cuda', 'cuda', 'fp32'),
    Spec('onnxruntime', 'tensorrt', 'cuda', 'fp32'),
    Spec('onnxruntime', 'tensorrt', 'cuda', 'fp16'),
    Spec('tensorrt', None, 'cuda', 'fp32'),
    Spec('tensorrt', None, 'cuda', 'fp16'),
    Spec('openvino', None, 'cpu', 'fp32'),
    Spec('openvino', None, 'cpu', 'bf16'),
    Spec('torch', None, 'cpu', 'fp32'),
    Spec('torch', None, 'cuda', 'fp32'),
    Spec('torch', None, 'cuda', 'fp16'),
)


def progress(text):
    """A progress line: engine builds take minutes on a Jetson, so say what runs now."""
    print(f'rtmo-check: {text}', flush=True)


# --- inventory -------------------------------------------------------------------------------

def ort_inventory():
    """ONNX Runtime's version and execution providers (long and short names)."""
    try:
        import onnxruntime
    except ImportError as err:
        return {'version': None, 'error': str(err), 'providers': [], 'short': []}
    providers = list(onnxruntime.get_available_providers())
    return {'version': onnxruntime.__version__, 'providers': providers,
            'short': ort_short_names(providers)}


def ort_short_names(providers):
    """The engine's provider names ('tensorrt', 'cuda', 'cpu') ORT has, preferring the
    engine's own ``available_providers`` where this rtmo_ros has it."""
    try:
        from .backends.onnxruntime_backend import available_providers
        return list(available_providers())
    except (ImportError, BackendUnavailable):
        return [short for name, short in ORT_NAMES.items() if name in providers]


def torch_inventory():
    """torch's version, whether it sees CUDA, the CUDA version it was built for, GPU names."""
    try:
        import torch
    except ImportError as err:
        return {'version': None, 'error': str(err), 'cuda_available': False,
                'cuda_version': None, 'devices': []}
    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if cuda else []
    return {'version': torch.__version__, 'cuda_available': cuda,
            'cuda_version': torch.version.cuda, 'devices': devices}


def openvino_inventory():
    """OpenVINO's version and whether its CPU plugin computes bf16 natively here."""
    if importlib.util.find_spec('openvino') is None:
        return {'version': None, 'error': 'openvino is not installed', 'bf16': False}
    try:
        import openvino

        from .backends.openvino_backend import cpu_has_bf16
        return {'version': openvino.__version__, 'bf16': cpu_has_bf16(openvino.Core())}
    except Exception as err:  # noqa: BLE001 - a broken install says why in the report
        return {'version': None, 'error': f'{type(err).__name__}: {err}', 'bf16': False}


def tensorrt_inventory():
    """TensorRT's version; find_spec first so that a missing package costs no import."""
    if importlib.util.find_spec('tensorrt') is None:
        return {'version': None, 'error': 'tensorrt is not installed'}
    try:
        import tensorrt
    except Exception as err:  # noqa: BLE001 - a broken install (missing libnvinfer) says why
        return {'version': None, 'error': f'tensorrt does not import: {err}'}
    return {'version': tensorrt.__version__}


def cuda_python_inventory():
    """cuda-python's view of the GPUs, with the error text cuda_memory gives the user."""
    from .backends import cuda_memory

    rt = cuda_memory._cudart()  # the same import order the TensorRT backend uses
    if rt is None:
        count, message = 0, 'cuda-python is not installed'
    else:
        count, message = cuda_memory.cudart_device_count(rt)
    return {'version': _distribution_version('cuda-python', 'cuda-bindings'),
            'device_count': count, 'message': message,
            'visible_devices': cuda_memory.device_count()}


def _distribution_version(*names):
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def inventory():
    """Everything the cases depend on (see the module docstring's ``inventory`` rows)."""
    from .backends.select import tensorrt_usable

    ok, why = tensorrt_usable()
    return {'python': platform.python_version(), 'platform': platform.platform(),
            'numpy': np.__version__, 'opencv': cv2.__version__,
            'onnxruntime': ort_inventory(), 'torch': torch_inventory(),
            'tensorrt': tensorrt_inventory(), 'cuda_python': cuda_python_inventory(),
            'openvino': openvino_inventory(),
            'tensorrt_usable': {'ok': ok, 'why': why},
            'rtmo_train': importlib.util.find_spec('rtmo_train') is not None}


def inventory_lines(inv):
    """Human-readable lines of the inventory."""
    ort, torch, trt, cp = (inv['onnxruntime'], inv['torch'], inv['tensorrt'],
                           inv['cuda_python'])
    torch_text = (f'{torch["version"]} (CUDA {torch["cuda_version"]}, '
                  f'{", ".join(torch["devices"]) or "no CUDA device"})'
                  if torch['version'] else f'absent ({torch["error"]})')
    return [f'python {inv["python"]} on {inv["platform"]}',
            f'numpy {inv["numpy"]}, OpenCV {inv["opencv"]}',
            f'onnxruntime {ort["version"] or "absent"}: {", ".join(ort["providers"]) or "-"}',
            f'torch {torch_text}',
            f'tensorrt {trt["version"] or trt["error"]}',
            f'openvino {inv["openvino"]["version"] or "absent"}'
            + (' (CPU with native bf16)' if inv['openvino']['bf16'] else ''),
            f'cuda-python {cp["version"] or "absent"}: {cp["device_count"]} device(s)'
            + (f' ({cp["message"]})' if cp['message'] else ''),
            f'tensorrt backend: {inv["tensorrt_usable"]["why"]}']


# --- model and frames ------------------------------------------------------------------------

def graph_shape(onnx_path):
    """The graph's input shape [B, 3, H, W], None for a symbolic dimension."""
    try:
        from .backends.tensorrt_backend import onnx_input_shape
        shape = onnx_input_shape(onnx_path)
    except BackendUnavailable:  # no onnx package: ask ONNX Runtime
        import onnxruntime
        shape = onnxruntime.InferenceSession(str(onnx_path)).get_inputs()[0].shape
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def model_info(path, checkpoint):
    """The ``model`` object of the report."""
    from .download import sha256_of

    batch, _, height, width = graph_shape(path)
    return {'path': str(path), 'sha256': sha256_of(path), 'input_size': [width, height],
            'batch': batch, 'dynamic_batch': batch is None,
            'checkpoint': str(checkpoint) if checkpoint else None}


def deterministic_frames(count=FRAMES, size=FRAME_SIZE, seed=FRAME_SEED):
    """Return (frames, source): ``count`` BGR frames, the same on every machine.

    Synthetic people from rtmo_train's renderer (what the bundled model learnt) when it is
    installed, else stick figures drawn here (imported lazily: the engine never needs
    rtmo_train).
    """
    try:
        from rtmo_train.data.synthetic import render_people
    except ImportError:
        return [drawn_frame(seed + i, size) for i in range(count)], 'drawn'
    frames = [render_people(np.random.default_rng([seed, i]), size[0], size[1], 3)[0]
              for i in range(count)]
    return frames, 'synthetic'


def image_frames(path, count=FRAMES):
    """Return (frames, source): the user's image and its mirror image, alternating, so that a
    batch holds two different images."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read image {path}')
    pair = (image, np.ascontiguousarray(image[:, ::-1]))
    return [pair[i % 2] for i in range(count)], str(path)


def drawn_frame(seed, size=FRAME_SIZE):
    """Two or three light stick figures side by side on a dark gradient, placed by ``seed``."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 90, width, dtype=np.float32)
    image = np.repeat(np.tile(ramp, (height, 1))[..., None], 3, axis=2).astype(np.uint8)
    count = int(rng.integers(2, 4))
    for k in range(count):  # side by side, each in its own column
        scale = height * rng.uniform(0.35, 0.8)
        centre = ((k + rng.uniform(0.35, 0.65)) * width / count, rng.uniform(0.45, 0.55) * height)
        _stick_figure(image, centre, scale, tuple(int(c) for c in rng.integers(150, 256, 3)))
    return image


def _stick_figure(image, centre, scale, colour):
    """A front-facing stick figure ``scale`` px tall around ``centre``."""
    x, y = centre
    s = scale

    def at(dx, dy):
        return int(round(x + dx * s)), int(round(y + dy * s))

    thick = max(2, int(s * 0.04))
    cv2.circle(image, at(0, -0.42), int(s * 0.07), colour, -1, cv2.LINE_AA)
    for a, b in (((0, -0.34), (0, 0.05)), ((-0.12, -0.28), (0.12, -0.28)),
                 ((-0.12, -0.28), (-0.2, -0.05)), ((-0.2, -0.05), (-0.24, 0.15)),
                 ((0.12, -0.28), (0.2, -0.05)), ((0.2, -0.05), (0.24, 0.15)),
                 ((-0.08, 0.05), (0.08, 0.05)), ((-0.08, 0.05), (-0.1, 0.3)),
                 ((-0.1, 0.3), (-0.11, 0.5)), ((0.08, 0.05), (0.1, 0.3)),
                 ((0.1, 0.3), (0.11, 0.5))):
        cv2.line(image, at(*a), at(*b), colour, thick, cv2.LINE_AA)


# --- parity ----------------------------------------------------------------------------------

def match_people(ref, poses, min_iou=MATCH_IOU):
    """Pairs (i, j) of reference and candidate people, greedily by descending box IoU.

    Greedy is enough: people that agree overlap at IoU near 1, far above any other pair.
    """
    if not len(ref) or not len(poses):
        return []
    iou = box_iou(ref.boxes, poses.boxes)
    pairs = []
    for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] <= min_iou:
            break
        if all(i != a and j != b for a, b in pairs):
            pairs.append((int(i), int(j)))
    return pairs


def compare(references, results, precision):
    """Return (parity dict, failure reason or '') of ``results`` against ``references``."""
    distances, matched, unmatched = [], 0, 0
    for ref, poses in zip(references, results):
        pairs = match_people(ref, poses)
        matched += len(pairs)
        unmatched += count_unmatched(ref, poses, pairs, precision)
        distances.extend(np.linalg.norm(ref.keypoints[i] - poses.keypoints[j], axis=-1).ravel()
                         for i, j in pairs)
    flat = np.concatenate(distances) if distances else np.empty(0)
    parity = {'people_ref': sum(len(r) for r in references),
              'people': sum(len(p) for p in results), 'matched': matched,
              'unmatched': unmatched,
              'kpt_max_px': float(flat.max()) if flat.size else None,
              'kpt_median_px': float(np.median(flat)) if flat.size else None,
              'tolerance_px': FP32_TOLERANCE_PX if precision == 'fp32' else None}
    return parity, parity_failure(parity)


def count_unmatched(ref, poses, pairs, precision):
    """People on one side only that make the case fail.

    Tolerated: near-ties at the graph's row cap (when a side returns ``GRAPH_MAX_DETECTIONS``
    people, which of the equal scores made the cut is arbitrary) and, for fp16 and int8, people
    scored below CONFIDENT_SCORE: their scores move a little, so a person near the score
    threshold may appear on one side only, which is drift, not a different result.
    """
    floor = max((float(p.scores.min()) + CAP_TIE for p in (ref, poses)
                 if len(p) >= GRAPH_MAX_DETECTIONS), default=-1.0)
    if precision != 'fp32':
        floor = max(floor, CONFIDENT_SCORE)
    ref_hit, hit = {i for i, _ in pairs}, {j for _, j in pairs}
    return (sum(1 for i in range(len(ref)) if i not in ref_hit and ref.scores[i] >= floor)
            + sum(1 for j in range(len(poses)) if j not in hit and poses.scores[j] >= floor))


def parity_failure(parity):
    """Why ``parity`` fails ('' when it passes): people on one side only (see
    ``count_unmatched``), or fp32 keypoints beyond the tolerance. fp16 and int8 keypoint
    drift is reported, not judged."""
    if parity['unmatched']:
        return (f'found {parity["people"]} people, matched {parity["matched"]} of the '
                f'reference\'s {parity["people_ref"]}: {parity["unmatched"]} on one side only')
    tolerance, worst = parity['tolerance_px'], parity['kpt_max_px']
    if tolerance is not None and worst is not None and worst > tolerance:
        return f'keypoints {worst:.3f} px from the reference (fp32 tolerance {tolerance} px)'
    return ''


# --- timing ----------------------------------------------------------------------------------

def time_batch(estimator, images, repeat):
    """Median / p90 ms of ``estimator.batch(images)`` after ``WARMUP_CALLS`` calls."""
    for _ in range(WARMUP_CALLS):
        estimator.batch(images)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        estimator.batch(images)  # returns host arrays: GPU work is finished
        times.append(1e3 * (time.perf_counter() - start))
    median = float(np.median(times))
    return {'median_ms': median, 'p90_ms': float(np.percentile(times, 90)),
            'images_per_s': len(images) * 1e3 / median, 'repeat': repeat}


# --- cases -----------------------------------------------------------------------------------

def estimator_takes(keyword):
    """True when this rtmo_ros's PoseEstimator takes ``keyword`` (``ort_provider`` and
    ``progress`` are recent: the check also runs against an older engine)."""
    return keyword in inspect.signature(PoseEstimator).parameters


def why_unavailable(spec, inv, checkpoint):
    """Why ``spec`` cannot run on this machine, or None when it can."""
    if spec.backend == 'onnxruntime':
        return _ort_unavailable(spec, inv)
    if spec.backend == 'tensorrt':
        usable = inv['tensorrt_usable']
        return None if usable['ok'] else usable['why']
    if spec.backend == 'openvino':
        ov = inv['openvino']
        if ov['version'] is None:
            return ov['error']
        return None if spec.precision != 'bf16' or ov['bf16'] else \
            'this CPU does not compute bf16 natively (AVX512-BF16 or AMX)'
    return _torch_unavailable(spec, inv, checkpoint)


def _ort_unavailable(spec, inv):
    ort = inv['onnxruntime']
    if ort['version'] is None:
        return 'onnxruntime is not installed'
    if spec.provider not in ort['short']:
        long = {v: k for k, v in ORT_NAMES.items()}[spec.provider]
        return f'onnxruntime has no {long}'
    if spec.provider == 'tensorrt' and not estimator_takes('ort_provider'):
        return 'this PoseEstimator has no ort_provider keyword to ask for the TensorRT EP'
    if spec.precision == 'int8' and not inv['rtmo_train']:
        return 'int8 calibrates on synthetic people from rtmo_train, which is not installed'
    return None


def _torch_unavailable(spec, inv, checkpoint):
    torch = inv['torch']
    if torch['version'] is None:
        return 'torch is not installed'
    if not inv['rtmo_train']:
        return 'the torch backend needs rtmo_train, which is not installed'
    if spec.device == 'cuda' and not torch['cuda_available']:
        return 'torch sees no CUDA device'
    if checkpoint is None:
        return 'no --checkpoint given for torch (the torch backend runs .pth checkpoints)'
    return None


def skipped_by_user(spec, skip_words):
    """True when a ``--skip`` word is a part of the spec's label ('int8', 'torch', 'cuda')
    or the whole label ('onnxruntime-tensorrt-fp16')."""
    parts = set(spec.label.split('-')) | {spec.label}
    return bool(parts & set(skip_words))


def batches_for(spec, model):
    """[(batch, reason it cannot run or None)]: batch 8 needs a dynamic batch axis."""
    if spec.backend == 'torch' or model['dynamic_batch']:
        return [(1, None), (FRAMES, None)]
    return [(1, None), (FRAMES, f'the graph\'s batch axis is fixed at {model["batch"]}: '
                                f'export one with rtmo-export --dynamic-batch')]


def new_case(spec, batch, status='skip', reason=''):
    """A case record with nothing measured yet."""
    return {'name': f'{spec.label}-b{batch}', 'backend': spec.backend,
            'provider': spec.provider, 'device': spec.device, 'precision': spec.precision,
            'precision_reported': None, 'provider_reported': None, 'hardware_id': None,
            'batch': batch,
            'status': status, 'reason': reason, 'build_s': None, 'parity': None,
            'timing': None, 'detail': None}


def estimator_kwargs(spec, args):
    """PoseEstimator arguments of ``spec``; ``ort_provider`` only where it is needed or
    known, so that an rtmo_ros without the keyword still runs the CPU and CUDA cases."""
    kwargs = dict(backend=spec.backend, device=spec.device, precision=spec.precision,
                  score_thr=args.score_thr, num_threads=args.threads,
                  cache_dir=args.cache_dir)
    if spec.backend == 'onnxruntime' and estimator_takes('ort_provider'):
        kwargs['ort_provider'] = spec.provider
    if estimator_takes('progress'):  # the steps of a TensorRT build, minutes on a Jetson
        kwargs['progress'] = lambda line: progress(f'  {line}')
    if spec.backend == 'torch':
        kwargs['max_persons'] = GRAPH_MAX_DETECTIONS
    return kwargs


def run_spec(spec, model_file, frames, references, batches, args):
    """Build ``spec``'s estimator once and run a case at each of ``batches``."""
    note = ' (a TensorRT engine build takes minutes the first time)' \
        if 'tensorrt' in spec.label else ''
    progress(f'building {spec.label}{note}')
    start = time.perf_counter()
    try:
        estimator = PoseEstimator(model_file, **estimator_kwargs(spec, args))
    except BackendUnavailable as err:
        return [new_case(spec, batch, 'skip', str(err)) for batch in batches]
    except Exception as err:  # noqa: BLE001 - any build error is this case's failure
        return [new_case(spec, batch, 'fail', f'build failed: {_one_line(err)}')
                for batch in batches]
    build_s = time.perf_counter() - start
    with estimator:
        return [run_case(spec, estimator, batch, build_s, frames, references, args.repeat)
                for batch in batches]


def run_case(spec, estimator, batch, build_s, frames, references, repeat):
    """Parity and timing of ``estimator`` at ``batch``."""
    case = new_case(spec, batch, 'pass')
    case.update(build_s=build_s, precision_reported=estimator.precision,
                provider_reported=getattr(estimator, 'ort_provider', None),
                hardware_id=estimator.hardware_id)
    progress(f'running {case["name"]}')
    try:
        results = estimator.batch(frames[:batch])
        case['parity'], failure = compare(references[:batch], results, spec.precision)
        case['timing'] = time_batch(estimator, frames[:batch], repeat)
    except Exception as err:  # noqa: BLE001 - an inference error is this case's failure
        case.update(status='fail', reason=f'inference failed: {_one_line(err)}')
        return case
    if failure:
        case.update(status='fail', reason=failure)
    elif not case['parity']['people_ref']:
        case['reason'] = 'the reference finds nobody in these frames: keypoints not compared'
    return case


def _one_line(err):
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'


def run_cases(model, inv, frames, references, args):
    """Every case of ``SPECS``: run, or skipped with the reason."""
    cases = []
    for spec in SPECS:
        reason = ('skipped by --skip' if skipped_by_user(spec, args.skip)
                  else why_unavailable(spec, inv, args.checkpoint))
        plan = batches_for(spec, model)
        if reason:
            cases.extend(new_case(spec, batch, 'skip', reason) for batch, _ in plan)
            continue
        runnable = [batch for batch, why in plan if why is None]
        model_file = args.checkpoint if spec.backend == 'torch' else model['path']
        done = {c['batch']: c for c in run_spec(spec, model_file, frames, references,
                                                runnable, args)}
        cases.extend(done.get(batch) or new_case(spec, batch, 'skip', why)
                     for batch, why in plan)
    return cases


# --- the reference ---------------------------------------------------------------------------

def reference_poses(reference_model, frames, args):
    """(reference dict, poses per frame) from ONNX Runtime on CPU at fp32."""
    spec = Spec('onnxruntime', 'cpu', 'cpu', 'fp32')
    progress(f'reference: onnxruntime cpu fp32 on {reference_model}')
    start = time.perf_counter()
    with PoseEstimator(reference_model, **estimator_kwargs(spec, args)) as estimator:
        build_s = time.perf_counter() - start
        poses = [estimator(frame) for frame in frames]
        hardware_id = estimator.hardware_id
    return {'model': str(reference_model), 'hardware_id': hardware_id,
            'people': [len(p) for p in poses], 'build_s': build_s}, poses


# --- training step (GPU machines) ------------------------------------------------------------

def train_step_case(device, repeat):
    """One rtmo_train training step with AMP on ``device``, timed; a case record.

    The tiny preset at 320 px on 8 rendered images (batch 8), fp16 autocast and a GradScaler
    on CUDA (bf16 autocast on CPU), as ``rtmo_train.train.Trainer`` sets them up.
    """
    case = new_case(Spec('rtmo_train', None, device, 'fp16' if device == 'cuda' else 'bf16'),
                    FRAMES)
    case['name'] = f'train-step-{device}-amp-b{FRAMES}'
    why = _train_unavailable(device)
    if why:
        case['reason'] = why
        return case
    progress(f'running {case["name"]}')
    try:
        detail, timing = _train_steps(device, repeat)
    except Exception as err:  # noqa: BLE001 - a broken step is this case's failure
        case.update(status='fail', reason=f'training step failed: {_one_line(err)}')
        return case
    finite = all(np.isfinite(detail['losses']))
    case.update(status='pass' if finite else 'fail', detail=detail, timing=timing,
                precision_reported=detail['amp'], hardware_id=f'torch:{device}',
                reason='' if finite else f'loss is not finite: {detail["losses"]}')
    return case


def _train_unavailable(device):
    if importlib.util.find_spec('torch') is None:
        return 'torch is not installed'
    if importlib.util.find_spec('rtmo_train') is None:
        return 'rtmo_train is not installed'
    import torch
    if device.startswith('cuda') and not torch.cuda.is_available():
        return 'torch sees no CUDA device'
    return None


def _train_steps(device, repeat):
    """(detail, timing) of ``repeat`` timed steps after one warm-up step."""
    import tempfile

    import torch

    from rtmo_train.engine import train_one_epoch
    with tempfile.TemporaryDirectory(prefix='rtmo-check-') as tmp:
        model, loss_step, batch, optimizer, scheduler, cfg = _train_setup(tmp, device)
        scaler = torch.amp.GradScaler('cuda') if device.startswith('cuda') else None
        losses, times = [], []
        for step in range(repeat + 1):
            start = time.perf_counter()
            stats = train_one_epoch(model, loss_step, [batch], optimizer, scheduler, step,
                                    loss_cfg=cfg.loss_at(0), device=device, scaler=scaler,
                                    progress=False)
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            times.append(1e3 * (time.perf_counter() - start))
            losses.append(stats['loss'])
    timed = times[1:]
    median = float(np.median(timed))
    amp = {torch.float16: 'fp16', torch.bfloat16: 'bf16'}[loss_step.amp_dtype]
    detail = {'losses': losses, 'grad_norm': stats['grad_norm'], 'amp': amp}
    timing = {'median_ms': median, 'p90_ms': float(np.percentile(timed, 90)),
              'images_per_s': FRAMES * 1e3 / median, 'repeat': repeat}
    return detail, timing


def _train_setup(folder, device):
    """Model, loss step, one batch of 8 synthetic images, optimizer, scheduler, config."""
    import torch

    from rtmo_train.data.batch import TrainDataset, collate
    from rtmo_train.data.coco import CocoKeypointDataset
    from rtmo_train.data.pipeline import build_pipeline
    from rtmo_train.data.synthetic import make_dataset
    from rtmo_train.engine import LossStep, seed_everything
    from rtmo_train.model.rtmo import build_model
    from rtmo_train.optim import LRSchedule, RTMOScheduler, build_optimizer
    from rtmo_train.train_config import tiny_preset

    seed_everything(0)
    cfg = tiny_preset()
    root = pathlib.Path(folder)
    make_dataset(str(root), FRAMES, seed=FRAME_SEED, width=320, height=240, max_people=3)
    # tiny preset: 320x320 input, the size of the bundled model
    source = CocoKeypointDataset(root / 'annotations.json', root / 'images')
    dataset = TrainDataset(source, build_pipeline(2, cfg.augment, source), seed=0)
    # images without people are left out of the dataset: cycle over those with some
    batch = collate([dataset[i % len(dataset)] for i in range(FRAMES)])
    model = build_model(cfg.model).to(device)
    amp = torch.float16 if device.startswith('cuda') else torch.bfloat16
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, dcc_lr_mult=cfg.dcc_lr_mult)
    scheduler = RTMOScheduler(optimizer, LRSchedule(warmup_epochs=0, min_lr=cfg.lr), 1)
    return model, LossStep(model, amp), batch, optimizer, scheduler, cfg


# --- report ----------------------------------------------------------------------------------

def _px(value):
    return '-' if value is None else f'{value:.3f}'


def case_line(case):
    """One table row: name, status, people, keypoint drift, timing."""
    parity, timing = case['parity'], case['timing']
    people = (f'{parity["matched"]}/{parity["people_ref"]}/{parity["people"]}'
              if parity else '-')
    drift = f'{_px(parity["kpt_max_px"])}/{_px(parity["kpt_median_px"])}' if parity else '-'
    speed = (f'{timing["median_ms"]:8.1f} {timing["p90_ms"]:8.1f} '
             f'{timing["images_per_s"]:7.1f}' if timing else f'{"-":>8} {"-":>8} {"-":>7}')
    line = (f'{case["name"]:<32} {case["status"].upper():<4} {people:>8} {drift:>13} '
            f'{speed}')
    return f'{line}  {case["reason"]}' if case['reason'] else line


def table(cases):
    """The stdout table (header plus one line per case)."""
    header = (f'{"case":<32} {"":<4} {"people":>8} {"kpt px":>13} {"med ms":>8} '
              f'{"p90 ms":>8} {"img/s":>7}')
    note = ('people: matched/reference/found; kpt px: max/median distance to the reference '
            f'(fp32 passes at <= {FP32_TOLERANCE_PX} px)')
    return '\n'.join([header] + [case_line(c) for c in cases] + [note])


def write_json(path, report):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + '\n')


# --- command line ----------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog='rtmo-check',
        description='What this machine can run, whether it runs it right (parity with ONNX '
                    'Runtime on CPU) and how fast.',
        epilog='Exit status: 0 every case that ran passed, 1 one failed, 2 bad usage. '
               'The JSON schema is documented in rtmo_ros/engine/check.py.')
    parser.add_argument('--model', default=BUNDLED_NAME,
                        help='zoo name or .onnx graph to check (default %(default)s, bundled)')
    parser.add_argument('--reference-model', default=None,
                        help='.onnx graph of the reference (default: --model)')
    parser.add_argument('--checkpoint', type=pathlib.Path, default=None,
                        help='.pth checkpoint of the same weights, for the torch cases')
    parser.add_argument('--image', type=pathlib.Path, default=None,
                        help='check on this image (and its mirror image) instead of the '
                             'deterministic synthetic frames')
    parser.add_argument('--repeat', type=_positive, default=20,
                        help='timed calls per case after the warm-up (default %(default)s)')
    parser.add_argument('--skip', type=_words, default=[],
                        help='comma-separated words of case names to skip: int8, torch, cuda, '
                             'tensorrt, fp16 or a whole name such as onnxruntime-cpu-int8')
    parser.add_argument('--score-thr', type=float, default=0.1,
                        help='person score threshold of every estimator (default %(default)s; '
                             'raise it for a model that fills the 50 rows of its graph)')
    parser.add_argument('--threads', type=_positive, default=None, help='CPU threads')
    parser.add_argument('--cache-dir', type=pathlib.Path, default=None,
                        help='TensorRT engine and int8 graph cache (default: the model cache)')
    parser.add_argument('--json', type=pathlib.Path, help='write the report to this file')
    parser.add_argument('--train-step', action='store_true',
                        help='also time an rtmo_train training step with AMP')
    parser.add_argument('--train-device', default='cuda',
                        help='device of the training step (default %(default)s)')
    return parser


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {text}')
    return value


def _words(text):
    return [w.strip() for w in text.split(',') if w.strip()]


def resolve_onnx(name, what):
    """Path of an ONNX graph from a zoo name or file; ValueError for anything else."""
    path = resolve_model(name, 'onnxruntime')[0]
    if path.suffix.lower() != '.onnx':
        raise ValueError(f'{what} must be an .onnx graph (ONNX Runtime on CPU is the '
                         f'reference), got {path}')
    return path


def usage_error(args):
    """The bad-usage message, or '' (models resolved into ``args``)."""
    try:
        args.model_path = resolve_onnx(args.model, '--model')
        args.reference_path = (resolve_onnx(args.reference_model, '--reference-model')
                               if args.reference_model else args.model_path)
    except (OSError, ValueError) as err:
        return str(err)
    for name in ('checkpoint', 'image'):
        path = getattr(args, name)
        if path is not None and not path.is_file():
            return f'--{name} {path} does not exist'
    return ''


def check(args):
    """Run everything; return the report dict."""
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    progress('inventory')
    inv = inventory()
    for line in inventory_lines(inv):
        print(f'  {line}', flush=True)
    frames, source = (image_frames(args.image) if args.image else deterministic_frames())
    report = {'schema': SCHEMA, 'created': created, 'host': platform.node(), 'inventory': inv,
              'model': None, 'reference': None, 'cases': [], 'passed': False}
    try:
        report['model'] = model_info(args.model_path, args.checkpoint)
        reference, poses = reference_poses(args.reference_path, frames, args)
    except Exception as err:  # noqa: BLE001 - no reference, nothing to compare: report it
        progress(f'the reference cannot run: {_one_line(err)}')
        return report
    reference['frames'] = {'count': len(frames), 'size': list(frames[0].shape[1::-1]),
                           'source': source, 'seed': None if args.image else FRAME_SEED}
    report['reference'] = reference
    report['cases'] = run_cases(report['model'], inv, frames, poses, args)
    if args.train_step:
        report['cases'].append(train_step_case(args.train_device, min(args.repeat, 5)))
    report['passed'] = all(c['status'] != 'fail' for c in report['cases'])
    return report


def main(argv=None):
    """Entry point of ``rtmo-check``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    error = usage_error(args)
    if error:
        parser.print_usage(sys.stderr)
        print(f'rtmo-check: error: {error}', file=sys.stderr)
        return 2
    report = check(args)
    print(table(report['cases']), flush=True)
    if args.json:
        write_json(args.json, report)
        progress(f'wrote {args.json}')
    ran = [c for c in report['cases'] if c['status'] != 'skip']
    print(f'rtmo-check: {"PASSED" if report["passed"] else "FAILED"}: '
          f'{sum(c["status"] == "pass" for c in ran)} of {len(ran)} cases passed, '
          f'{len(report["cases"]) - len(ran)} skipped', flush=True)
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
