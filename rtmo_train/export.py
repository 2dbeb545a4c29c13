"""Export RTMO to one ONNX graph with the official RTMO (mmdeploy) interface, NMS inside.

ONNX contract
-------------
Input ``input``: float32 (B, 3, H, W), (W, H) = the model's input size (416x416 for t,
640x640 otherwise), BGR, values 0..255, no normalisation (``rtmo_ros.engine.preprocess.
letterbox_image`` makes it). B is 1, or any size with ``--dynamic-batch``.

Outputs, all in **network-input pixels** (boxes not clamped, keypoints not clamped):

* ``dets`` float32 (B, N, 5): x1, y1, x2, y2, score (score = sigmoid(cls)).
* ``keypoints`` float32 (B, N, K, 3): x, y, score (score = sigmoid(visibility logit)).

``N = min(max_detections, number of priors)`` exactly (default 50, as mmdeploy's RTMO
config; 2000 priors at 640, 845 at 416). Rows are sorted by descending score. An image with
fewer than N detections gets **all-zero padding rows** (score exactly 0): keep rows with
score > 0. Unlike mmdeploy's graph (N = min(50, detections + 1)), N never varies, so the DCC
runs on N rows whoever is in the image. ``--rows found`` makes N the number of detections NMS
kept in the whole batch (at least 1, at most the above): the DCC then runs on the people
found (3-4 % of a CPU run of RTMO-s with 8 people), but TopK's K is computed, which TensorRT
does not document (the tensorrt backend warns); for ONNX Runtime and OpenVINO.

Baked-in post-process (mmpose's test_cfg): score > 0.1 (strict), then the standard ONNX
``NonMaxSuppression`` (single class, IoU threshold 0.65, a box is dropped when IoU > 0.65
with a better one, no per-image cap before the top-N), then the DCC on the unclamped boxes.
To change the thresholds, re-export. Opset 17 by default; operators are limited to those
the ONNX parsers of TensorRT 8.6 and 10 import (``TENSORRT_OPS``; TensorRT builds NMS with
its INMSLayer). Export fuses a copy (``RTMO.deploy()``: BatchNorm folding, RepVGG fusion, the
stem's space-to-depth folded into a 6x6 conv, the FPN blocks' input convs without their
concatenation); the graph runs the same code as ``RTMO.forward`` and ``DCC.predict`` (its
factored bin logits). All are exact rewrites, equal up to float rounding, and the graph runs
in ~0.86x the time of mmdeploy's on a CPU (README, "Benchmark").

``--jetpack5`` exports for TensorRT 8.5 (JetPack 5, every Xavier), whose ONNX parser imports
no LayerNormalization: opset 16, where the exporter writes LayerNorm as its elementary ops
(``TENSORRT_85_OPS``), with fixed rows only (TopK's K a constant, as 8.5 needs).

Command line: ``rtmo-export CHECKPOINT OUTPUT.onnx [--max-detections N] [--dynamic-batch]
[--rows fixed|found] [--opset 17 | --jetpack5]``; CHECKPOINT is an mmpose RTMO ``.pth`` or an
rtmo_train checkpoint.
"""
import argparse
import copy
import pathlib
import sys
import warnings

import torch
from torch import nn

from .checkpoint import load_model
from .model.head import STRIDES, grid_priors
from .model.rtmo import NMS_THR, SCORE_THR
from .nms import nms

MAX_DETECTIONS = 50  # mmdeploy pose-detection_rtmo_*: keep_top_k = 50
ROWS = ('fixed', 'found')  # N rows always, or the rows NMS kept (see the module doc)

# ONNX operators that the ONNX parsers of TensorRT 8.6 and 10 import (onnx-tensorrt
# docs/operators.md); LayerNormalization needs TensorRT >= 8.6.
TENSORRT_OPS = frozenset({
    'Add', 'And', 'Cast', 'Clip', 'Concat', 'Constant', 'ConstantOfShape', 'Conv', 'Cos',
    'Div', 'Equal', 'Erf', 'Exp', 'Expand', 'Flatten', 'Gather', 'GatherElements',
    'GatherND', 'Gemm', 'Greater', 'Identity', 'LayerNormalization', 'Less', 'MatMul', 'Max',
    'MaxPool', 'Min', 'Mul', 'Neg', 'NonMaxSuppression', 'Not', 'Pow', 'Range', 'ReduceL2',
    'ReduceMax', 'ReduceMean', 'ReduceSum', 'Relu', 'Reshape', 'Resize', 'ScatterND', 'Shape',
    'Sigmoid', 'Sin', 'Slice', 'Softmax', 'Split', 'Sqrt', 'Squeeze', 'Sub', 'Tile', 'TopK',
    'Transpose', 'Unsqueeze', 'Where',
})
# TensorRT 8.5 (JetPack 5): the same without LayerNormalization (imported from 8.6 on)
TENSORRT_85_OPS = TENSORRT_OPS - {'LayerNormalization'}
JETPACK5_OPSET = 16  # the last opset without LayerNormalization: the exporter decomposes it


class NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (center_point_box=0) with an eager twin for tracing.

    boxes (B, N, 4) xyxy, scores (B, 1, N) -> selected (M, 3) int64 rows of
    (batch, class=0, box index), per image by descending score. Boxes with score <=
    ``score_thr`` are dropped; IoU > ``iou_thr`` suppresses. The ONNX op accepts any diagonal
    corner pair, so xyxy works as the spec's yxyx does (IoU is symmetric in x and y).
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_thr, score_thr):
        rows = []
        for b in range(boxes.shape[0]):
            idx = torch.nonzero(scores[b, 0] > score_thr)[:, 0]
            idx = idx[nms(boxes[b, idx], scores[b, 0, idx], float(iou_thr))]
            idx = idx[:int(max_per_class)]
            rows.append(torch.stack((torch.full_like(idx, b), torch.zeros_like(idx), idx), 1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thr, score_thr):
        return g.op('NonMaxSuppression', boxes, scores, max_per_class, iou_thr, score_thr)


class RowsFound(torch.autograd.Function):
    """ONNX ``TopK`` along axis 1 of K = clamp(number of NMS-selected boxes, 1, ``top_n``)
    rows (``--rows found``); K comes from the *shape* of the NMS output, not its values.

    scores (B, P), selected (M, 3), top_n -> values, indices (B, K).
    """

    @staticmethod
    def forward(ctx, scores, selected, top_n):
        return scores.topk(max(1, min(selected.shape[0], top_n)), dim=1)

    @staticmethod
    def symbolic(g, scores, selected, top_n):
        def const(value):
            return g.op('Constant', value_t=torch.tensor([value], dtype=torch.int64))

        found = g.op('Slice', g.op('Shape', selected), const(0), const(1))  # [M]
        k = g.op('Min', g.op('Max', found, const(1)), const(top_n))
        return g.op('TopK', scores, k, axis_i=1, outputs=2)


class RTMOWithNMS(nn.Module):
    """``input`` (B, 3, H, W) -> ``dets`` (B, N, 5), ``keypoints`` (B, N, K, 3); see module doc.

    Runs ``RTMO.forward``, ``RTMOHead.flatten`` and ``DCC.predict`` of the wrapped model;
    only the selection (threshold, NMS, top-N) differs from ``predict_network`` because it
    must be expressed in ONNX operators.
    """

    def __init__(self, model, max_detections=MAX_DETECTIONS, fixed_rows=False):
        super().__init__()
        self.model = model
        self.fixed_rows = fixed_rows
        w, h = model.cfg.input_size
        points, strides = grid_priors([(h // s, w // s) for s in STRIDES])
        self.register_buffer('prior_points', points, persistent=False)
        self.register_buffer('prior_strides', strides, persistent=False)
        self.num_priors = int(points.shape[0])
        self.top_n = min(int(max_detections), self.num_priors)

    def forward(self, inputs):
        """See class docstring."""
        flat = self.model.head.flatten(self.model(inputs),
                                       (self.prior_points, self.prior_strides))
        scores = torch.where(flat.scores > SCORE_THR, flat.scores, torch.zeros_like(flat.scores))
        selected = NonMaxSuppression.apply(
            flat.boxes, scores[:, None, :], torch.tensor(self.num_priors),
            torch.tensor(NMS_THR), torch.tensor(SCORE_THR))
        kept = torch.zeros_like(scores)
        kept[selected[:, 0], selected[:, 2]] = 1.0
        if self.fixed_rows:  # N = top_n: TensorRT 8.5 needs a constant K
            top_scores, idx = (scores * kept).topk(self.top_n, dim=1)
        else:  # the rows found: the DCC below then runs on the people found only
            top_scores, idx = RowsFound.apply(scores * kept, selected, self.top_n)

        def take(x):  # (B, P, C) -> (B, N, C) at the top-N priors
            return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))

        boxes = take(flat.boxes)
        kpts = self.model.head.dcc.predict(take(flat.pose_vecs), boxes, flat.priors[idx])
        valid = top_scores > 0
        dets = torch.cat((boxes, top_scores[..., None]), dim=-1)
        keypoints = torch.cat((kpts, take(flat.kpt_scores)[..., None]), dim=-1)
        # padding rows: zeros, not the (finite but meaningless) values of unselected priors
        dets = torch.where(valid[..., None], dets, torch.zeros_like(dets))
        keypoints = torch.where(valid[..., None, None], keypoints, torch.zeros_like(keypoints))
        return dets, keypoints


def export_onnx(model, path, max_detections=MAX_DETECTIONS, dynamic_batch=False, opset=17,
                rows='fixed'):
    """Write ``model`` (an ``RTMO``) to ``path`` as ONNX with the contract of the module doc.

    The model is copied and fused (``deploy()``); ``model`` itself is not changed. ``rows``
    is one of ``ROWS``. Returns N, the rows per image in the outputs (the most, with
    ``rows='found'``).
    """
    if opset < JETPACK5_OPSET:
        raise ValueError(f'opset must be >= {JETPACK5_OPSET} (17: LayerNormalization; '
                         f'{JETPACK5_OPSET}: for TensorRT 8.5), got {opset}')
    if rows not in ROWS:
        raise ValueError(f'rows must be one of {", ".join(ROWS)}, got {rows!r}')
    if rows == 'found' and opset < 17:
        raise ValueError("rows 'found' computes TopK's K, which TensorRT 8.5 cannot import: "
                         "the JetPack 5 export (opset 16) needs rows 'fixed'")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fixed_rows = rows == 'fixed'
    wrapper = RTMOWithNMS(copy.deepcopy(model).cpu().float().deploy(), max_detections,
                          fixed_rows).eval()
    w, h = model.cfg.input_size
    dummy = torch.full((1, 3, h, w), 114.0)
    batch = {0: 'batch'} if dynamic_batch else {}
    row_axis = {} if fixed_rows else {1: 'rows'}
    axes = {'input': batch, 'dets': {**batch, **row_axis}, 'keypoints': {**batch, **row_axis}}
    with torch.no_grad(), warnings.catch_warnings():
        # tracing warns about Python ints taken from shapes (the spatial size is fixed), and
        # the TorchScript exporter about its deprecation: it is used on purpose, since the
        # dynamo exporter does not take the autograd.Function symbolic that emits NMS
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=['input'],
                          output_names=['dets', 'keypoints'], opset_version=opset,
                          dynamic_axes={k: v for k, v in axes.items() if v}, dynamo=False,
                          do_constant_folding=True)
    return wrapper.top_n


def parse_args(argv=None):
    """Command-line arguments of ``rtmo-export``."""
    parser = argparse.ArgumentParser(
        prog='rtmo-export',
        description='Export an RTMO checkpoint to ONNX (inputs/outputs as mmdeploy\'s RTMO: '
                    'input (B,3,H,W) BGR 0-255; dets (B,N,5), keypoints (B,N,K,3) in '
                    'network-input pixels; NMS inside, score>0.1, IoU 0.65).')
    parser.add_argument('checkpoint', help='mmpose RTMO .pth or rtmo_train checkpoint')
    parser.add_argument('output', help='ONNX file to write')
    parser.add_argument('--max-detections', type=int, default=MAX_DETECTIONS,
                        help='N, the most rows per image in the outputs (default '
                             '%(default)s)')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help='make the batch axis dynamic (default: fixed batch 1)')
    parser.add_argument('--rows', choices=ROWS, default='fixed',
                        help='fixed: N rows always (TensorRT); found: the rows NMS kept, at '
                             'most N (ONNX Runtime, OpenVINO: the DCC runs on the people '
                             'found)')
    parser.add_argument('--opset', type=int, default=17,
                        help=f'ONNX opset (>= 17, or {JETPACK5_OPSET} as --jetpack5)')
    parser.add_argument('--jetpack5', action='store_true',
                        help='for TensorRT 8.5 (JetPack 5): opset 16, LayerNormalization '
                             'decomposed into elementary ops')
    args = parser.parse_args(argv)
    if args.jetpack5:
        args.opset = JETPACK5_OPSET
    if args.max_detections < 1:
        parser.error(f'--max-detections must be >= 1, got {args.max_detections}')
    return args


def main(argv=None):
    """Entry point of ``rtmo-export``; returns the process exit code."""
    args = parse_args(argv)
    try:
        model = load_model(args.checkpoint)
        rows = export_onnx(model, args.output, args.max_detections, args.dynamic_batch,
                           args.opset, args.rows)
    except (FileNotFoundError, ValueError) as exc:
        print(f'rtmo-export: error: {exc}', file=sys.stderr)
        return 2
    cfg = model.cfg
    print(f'wrote {args.output}: RTMO-{cfg.variant}, K={cfg.num_keypoints}, input '
          f'{cfg.input_size[0]}x{cfg.input_size[1]}, '
          f'{"N=" if args.rows == "fixed" else "at most N="}{rows} rows per image, '
          f'opset {args.opset}, batch {"dynamic" if args.dynamic_batch else 1}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
