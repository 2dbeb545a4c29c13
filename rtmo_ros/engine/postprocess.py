"""Network outputs -> :class:`Poses` in image pixels, shared by every backend.

Input contract (the official mmdeploy RTMO ONNX graph, one image):

    dets:      (N, 5) float32, x1, y1, x2, y2, score; network-input pixels, boxes NOT clamped
    keypoints: (N, K, 3) float32, x, y, score (sigmoid of the visibility logit); network pixels

N is anything from 0 up to the graph's keep-top-k (50); rows may be zero-score padding
(mmdeploy's top-k rewriter emits ``survivors + 1`` rows). The graph already applied score
threshold 0.1 and NMS at IoU 0.65, both fixed when the graph was exported.
"""
import numpy as np

from .poses import Poses


def box_iou(a, b):
    """Pairwise IoU (len(a), len(b)) of x1, y1, x2, y2 boxes (any array-likes of 4-vectors)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes, iou_thr):
    """Greedy single-class NMS over score-sorted boxes; return the kept row indices.

    ``boxes`` is (N, 4) xyxy, already sorted by descending score. A box is dropped when its IoU
    with a kept box is strictly greater than ``iou_thr``; IoU has no +1 pixel term and its union
    is clamped to >= 1e-6 (mmpose ``nms_torch`` / ``bbox_overlaps``).
    """
    boxes = np.asarray(boxes, np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(boxes), bool)
    keep = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        if rest.size == 0:
            break
        w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        union = np.maximum(areas[i] + areas[rest] - inter, 1e-6)
        alive[rest[inter / union > iou_thr]] = False
    return np.asarray(keep, np.int64)


def select(dets, score_thr, nms_thr=None, max_persons=None):
    """Return the row indices of ``dets`` (N, 5) to keep, sorted by descending score.

    Keeps rows with score > ``score_thr`` (strict, as mmpose), then runs :func:`nms` when
    ``nms_thr`` is given, then keeps at most ``max_persons`` rows.
    """
    scores = dets[:, 4]
    keep = np.flatnonzero(scores > score_thr)
    keep = keep[np.argsort(-scores[keep], kind='stable')]
    if nms_thr is not None and keep.size > 1:
        keep = keep[nms(dets[keep, :4], nms_thr)]
    if max_persons is not None:
        keep = keep[:max_persons]
    return keep


def to_poses(dets, keypoints, letterbox, input_wh, score_thr, nms_thr=None, max_persons=None):
    """Turn one image's network outputs into :class:`Poses` in image pixels.

    ``dets`` (N, 5) and ``keypoints`` (N, K, 3) follow the module contract; ``letterbox`` is the
    :class:`~rtmo_ros.engine.preprocess.Letterbox` of that image and ``input_wh`` the network
    input size. Boxes are clamped to the network input before mapping back (mmpose
    ``RTMOHead.predict`` does so); keypoints are not clamped. ``nms_thr`` is an extra NMS on
    top of the graph's own (None: none). Returns empty arrays with K columns when nobody is kept.
    """
    keep = select(dets, score_thr, nms_thr, max_persons)
    num_kpts = keypoints.shape[1]
    if keep.size == 0:
        return Poses.empty(num_kpts)
    boxes = dets[keep, :4]
    in_w, in_h = input_wh
    np.clip(boxes[:, 0::2], 0, in_w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, in_h, out=boxes[:, 1::2])
    kpts = keypoints[keep]
    return Poses(boxes=letterbox.boxes_to_image(boxes),
                 scores=np.ascontiguousarray(dets[keep, 4], np.float32),
                 keypoints=letterbox.to_image(kpts[..., :2]),
                 keypoint_scores=np.ascontiguousarray(kpts[..., 2], np.float32))
