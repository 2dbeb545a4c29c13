"""Side-by-side CPU timing: bare ONNX Runtime run vs PoseEstimator vs rtmlib's RTMO.

All use one 640x480 BGR frame and ONNX Runtime sessions with the same
``intra_op_num_threads``. ``bare``, ``ours`` and ``rtmlib`` run the same ONNX file (by default
mmdeploy's official-contract graph of the parity weights). ``ours (own export)`` is
PoseEstimator on the graph ``rtmo-export`` makes from the checkpoint of the **same weights**
(BatchNorm folded, RepVGG fused, a constant-K TopK, no shape arithmetic on the batch), which is
what this project deploys. Calls are interleaved (bare, ours, own export, rtmlib, bare, ...) so
that load from other processes hits all alike; medians are reported.

    python benchmarks/bench_engine.py [--onnx FILE] [--checkpoint FILE.pth] [--threads 2]
                                      [--iters 10]

With openvino installed, three more rows: ours on the openvino backend at fp32 and (on a CPU
with native bf16) bf16, with the same thread count, and rtmlib's own OpenVINO backend with its
own settings (OpenVINO's default precision, bf16 on such a CPU).

The seeded weights find 50 "people" (the most a graph returns) in the frame, which is when
mmdeploy's graph, whose DCC runs on the found rows only, does the most work. Two more rows
measure our export (as exported by default, and with ``--rows found``, whose DCC runs on the
rows found) and rtmlib on a few people: both graphs with the class bias lowered by
``FEW_PEOPLE_SHIFT`` (8 detections in the 640x480 frame), so again the same weights in both.

Targets: pipeline / bare run <= 1.05, pipeline / rtmlib <= 0.95 (our export against
rtmlib on the official graph of the same weights; ours on OpenVINO at fp32 against rtmlib on
its default backend).
"""
import argparse
import pathlib
import statistics
import tempfile
import time

import cv2
import numpy as np

from rtmo_ros.engine import PoseEstimator
from rtmo_ros.engine.preprocess import letterbox_image

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ONNX = REPO.parent / 'shared' / 'parity' / 'rtmo-s_coco_seed1_mmdeploy.onnx'
DEFAULT_CHECKPOINT = DEFAULT_ONNX.with_name('rtmo-s_coco_seed1.pth')
FEW_PEOPLE_SHIFT = -0.5  # added to the class-logit bias: 8 detections in the frame, not 50
CLS_BIAS = 'head.head_module.out_cls.'  # + '{level}.bias', in checkpoints and mmdeploy graphs


def own_export(checkpoint, folder, cls_shift=0.0, rows='fixed'):
    """Our exporter's graph (fixed batch 1, as the node runs one camera) of ``checkpoint``,
    with ``cls_shift`` added to the class-logit biases and ``rows`` (``--rows``)."""
    import torch

    from rtmo_train import load_model
    from rtmo_train.export import export_onnx

    model = load_model(checkpoint)
    with torch.no_grad():
        for conv in model.head.head_module.out_cls:
            conv.bias += cls_shift
    path = pathlib.Path(folder) / f'own_export{cls_shift:+g}_{rows}.onnx'
    export_onnx(model, path, rows=rows)
    return path


def shifted_graph(onnx_path, folder, cls_shift):
    """A copy of an mmdeploy graph with ``cls_shift`` added to its class-logit biases."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    for init in model.graph.initializer:
        if init.name.startswith(CLS_BIAS) and init.name.endswith('.bias'):
            shifted = numpy_helper.to_array(init) + np.float32(cls_shift)
            init.CopyFrom(numpy_helper.from_array(shifted, init.name))
    path = pathlib.Path(folder) / f'mmdeploy{cls_shift:+g}.onnx'
    onnx.save(model, str(path))
    return path


def make_frame(onnx_path):
    """A 640x480 BGR frame: the fixture image when present (people-like detections), else noise."""
    npz = pathlib.Path(onnx_path).with_name('rtmo-s_coco_seed1_io.npz')
    if npz.exists():
        return cv2.resize(np.load(npz)['image_bgr'], (640, 480), interpolation=cv2.INTER_AREA)
    return np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)


def session(onnx_path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])


def rtmlib_model(onnx_path, threads):
    """rtmlib's RTMO on the same file; its session is replaced by one with our thread count
    (rtmlib exposes no thread option), everything else is rtmlib's own code."""
    from rtmlib import RTMO
    model = RTMO(str(onnx_path), model_input_size=(640, 640), backend='onnxruntime',
                 device='cpu')
    model.session = session(onnx_path, threads)
    return model


def timed(fn):
    """ms of one call, after a 0.1 s pause: the thread pools of ONNX Runtime and OpenVINO spin
    for a while after a run, and on two cores that slowed whichever ran next by up to 20 %."""
    time.sleep(0.1)
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--onnx', type=pathlib.Path, default=DEFAULT_ONNX)
    parser.add_argument('--checkpoint', type=pathlib.Path, default=DEFAULT_CHECKPOINT,
                        help='the weights of --onnx, for our own export (skipped if absent)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=10)
    args = parser.parse_args(argv)

    frame = make_frame(args.onnx)
    bare = session(args.onnx, args.threads)
    feed = {'input': letterbox_image(frame, (640, 640))[0][None]}
    est = PoseEstimator(args.onnx, backend='onnxruntime', num_threads=args.threads)
    runners = {'bare': lambda _: bare.run(None, feed), 'ours': est,
               **own_runners(args), 'rtmlib': rtmlib_model(args.onnx, args.threads)}
    extra, rtmlib_ov_precision = openvino_runners(args.onnx, args.threads)
    runners.update(extra)
    for fn in runners.values():  # warm-up: arena allocation, first-run kernels
        fn(frame), fn(frame)
    times, stages = {name: [] for name in runners}, []
    for _ in range(args.iters):  # interleaved: load from other processes hits all alike
        for name, fn in runners.items():
            times[name].append(timed(lambda fn=fn: fn(frame)))
            if name == 'ours':
                stages.append(est.timings)
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f'RTMO ONNX {args.onnx.name}, 640x480 frame, {args.threads} threads, '
          f'{args.iters} interleaved iterations, medians:')
    for name in ('preprocess_ms', 'inference_ms', 'postprocess_ms'):
        print(f'  ours {name:<15} {statistics.median(getattr(s, name) for s in stages):8.2f}')
    for name, value in med.items():
        print(f'  {name:<21} {value:8.2f} ms')
    print_ratios(med, rtmlib_ov_precision,
                 people=len(runners[FEW_OWN](frame).scores) if FEW_OWN in runners else None)
    for fn in runners.values():
        if isinstance(fn, PoseEstimator):
            fn.close()


def own_runners(args):
    """{row name: callable(frame)} of our pipeline on our own export of --checkpoint and of
    the few-people pair; {} without the checkpoint."""
    if not args.checkpoint.exists():
        return {}
    folder = tempfile.mkdtemp()

    def ours(cls_shift=0.0, rows='fixed'):
        return PoseEstimator(own_export(args.checkpoint, folder, cls_shift, rows),
                             backend='onnxruntime', num_threads=args.threads)

    few_graph = shifted_graph(args.onnx, folder, FEW_PEOPLE_SHIFT)
    return {OWN: ours(), FEW_OWN: ours(FEW_PEOPLE_SHIFT),
            FEW_FOUND: ours(FEW_PEOPLE_SHIFT, 'found'),
            FEW_RTMLIB: rtmlib_model(few_graph, args.threads)}


def print_ratios(med, rtmlib_ov_precision, people):
    """The ratio lines of the rows that ran (``people``: found in the few-people frame)."""
    print(f'  pipeline / bare run  {med["ours"] / med["bare"]:8.3f}   (target <= 1.05)')
    print(f'  pipeline / rtmlib    {med["ours"] / med["rtmlib"]:8.3f}   (same graph)')
    if OWN in med:
        print(f'  own export / rtmlib  {med[OWN] / med["rtmlib"]:8.3f}   '
              '(same weights; target <= 0.95)')
        print(f'  own export / rtmlib, few people ({people} found)  '
              f'{med[FEW_OWN] / med[FEW_RTMLIB]:8.3f}   (same weights; target <= 0.95)')
        print(f'  own export --rows found / rtmlib, few people  '
              f'{med[FEW_FOUND] / med[FEW_RTMLIB]:8.3f}')
    if OV_FP32 in med:
        print(f'  ours (openvino fp32) / rtmlib {med[OV_FP32] / med["rtmlib"]:8.3f}   (same '
              'graph; rtmlib on its default backend, onnxruntime; target <= 0.95)')
        print(f'  ours (openvino fp32) / ours   {med[OV_FP32] / med["ours"]:8.3f}')
    if OV_BF16 in med and RTMLIB_OV in med:
        print(f'  ours (openvino bf16) / rtmlib (openvino) {med[OV_BF16] / med[RTMLIB_OV]:8.3f}'
              f'   (rtmlib runs {rtmlib_ov_precision} here: OpenVINO\'s default)')


OV_FP32, OV_BF16, RTMLIB_OV = 'ours (openvino fp32)', 'ours (openvino bf16)', 'rtmlib (openvino)'
OWN = 'ours (own export)'
FEW_OWN, FEW_FOUND = 'own export, few people', 'own export --rows found, few people'
FEW_RTMLIB = 'rtmlib, few people'


def openvino_runners(onnx_path, threads):
    """({row name: callable(frame)}, the precision rtmlib's OpenVINO runs) of the OpenVINO rows,
    ({}, None) without openvino: ours at fp32 and (on a CPU with native bf16) bf16 with
    ``threads`` threads, and rtmlib's own OpenVINO backend (its config: latency hint, OpenVINO's
    default precision and thread count)."""
    try:
        import openvino
    except ImportError:
        print('openvino is not installed: no OpenVINO rows')
        return {}, None
    from rtmo_ros.engine.backends.openvino_backend import cpu_has_bf16
    runners = {OV_FP32: PoseEstimator(onnx_path, backend='openvino', precision='fp32',
                                      num_threads=threads)}
    if cpu_has_bf16(openvino.Core()):
        runners[OV_BF16] = PoseEstimator(onnx_path, backend='openvino', precision='bf16',
                                         num_threads=threads)
    try:
        from rtmlib import RTMO
    except ImportError:
        return runners, None
    runners[RTMLIB_OV] = RTMO(str(onnx_path), model_input_size=(640, 640), backend='openvino',
                              device='cpu')
    return runners, str(runners[RTMLIB_OV].compiled_model.get_property(
        'INFERENCE_PRECISION_HINT'))


if __name__ == '__main__':
    main()
