"""Tracking and 3D keypoint metrics of tracked poses against ground truth (pure: no ROS).

Inputs are per-frame lists, one list per frame in the same order for GT and predictions:

- :func:`tracking_metrics`: ``(track_id, box)`` pairs, box ``(x1, y1, x2, y2)`` [px]. A
  prediction with track id -1 (untracked) is ignored: not matched, not a false positive.
- :func:`keypoint3d_metrics`: dicts with ``box`` and ``keypoints_3d`` (K, 3) [m]; GT also
  ``visibility`` (K,) (COCO v) and ``position_3d`` (3,) [m]; predictions optionally
  ``position_3d`` (3,) [m]. :func:`gt_frames_from_coco` builds the GT lists from the demo
  bag's gt.json.

A GT and a predicted person can match in a frame when their box IoU is >= 0.5 (``iou_thr``).

Library: py-motmetrics (``motmetrics`` 1.4.0) computes MOTA, ID switches and the identity
metrics (IDF1, IDP, IDR) on our IoU distance matrix. Why not TrackEval: the original
(JonathonLuiten/TrackEval) is not on PyPI; the ``trackeval`` 1.3.0 there (a packaging of it,
kovalp/TrackEval) does run on numpy 2, but it requires ``opencv-python``, which pip installs
next to our ``opencv-python-headless`` (both own the ``cv2`` package, the last one installed
wins) and at OpenCV 5, which the rest of the project is not tested on (see
requirements/python.txt). motmetrics runs on numpy 2.4 and pandas 3 (the tests run it with
warnings as errors) except ``motmetrics.distances.iou_matrix``, which calls ``np.asfarray``
(removed in numpy 2.0); we compute the IoU matrix ourselves. motmetrics matches as CLEAR MOT
does: a GT-prediction pair of the previous frame is kept while its IoU stays >= 0.5, the other
people are matched by the Hungarian algorithm on 1 - IoU. It has no HOTA: :func:`hota`
implements Luiten et al., "HOTA: A Higher Order Metric for Evaluating Multi-Object Tracking",
IJCV 2021, step for step as TrackEval's ``metrics/hota.py`` (checked against it in the tests
when ``trackeval`` is importable).
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

from rtmo_ros.perception.tracker import box_iou  # noqa: F401 - track_metrics.box_iou, public

IOU_THR = 0.5
HOTA_ALPHAS = np.arange(1, 20) / 20  # 0.05, 0.10, ..., 0.95 (TrackEval's array_labels)
TORSO = (5, 6, 11, 12)  # COCO shoulders and hips: position_3d is their mean
_EPS = np.finfo(float).eps


def match_boxes(gt_boxes, pred_boxes, iou_thr=IOU_THR):
    """Hungarian matching maximising the summed IoU over pairs with IoU >= ``iou_thr``.

    Returns (gt indices, pred indices, their IoUs), int arrays and a float array.
    """
    iou = box_iou(gt_boxes, pred_boxes)
    if iou.size == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    allowed = iou >= iou_thr
    rows, cols = linear_sum_assignment(np.where(allowed, -iou, 1.0))
    keep = allowed[rows, cols]
    return rows[keep], cols[keep], iou[rows[keep], cols[keep]]


# -- tracking --------------------------------------------------------------------------------
def tracking_metrics(gt_frames, pred_frames, iou_thr=IOU_THR):
    """MOTA, IDF1, ID switches (motmetrics) and HOTA of tracked boxes; return a dict.

    ``gt_frames`` / ``pred_frames``: one list of ``(track_id, (x1, y1, x2, y2))`` per frame,
    same number of frames (an empty list: nobody). Track ids need to be unique within a frame.

    Returns floats / ints: ``idf1``, ``idp``, ``idr``, ``mota``, ``motp_iou`` (mean IoU of
    the CLEAR MOT matches), ``id_switches``, ``false_positives``, ``misses``,
    ``fragmentations``, ``mostly_tracked``, ``mostly_lost``, ``gt_tracks``, ``gt_boxes``,
    ``pred_boxes`` (tracked ones), ``frames``, ``hota``, ``deta``, ``assa`` (HOTA's
    averages over alpha, IoU similarity). Ratios are NaN when undefined (e.g. no GT).
    """
    import motmetrics  # imported here: pandas is slow to import and only this needs it

    gt, pred = _tracks(gt_frames, 'gt_frames'), _tracks(pred_frames, 'pred_frames')
    if len(gt) != len(pred):
        raise ValueError(f'gt_frames has {len(gt)} frames and pred_frames {len(pred)}; give '
                         'one list per frame to both (an empty list for a frame with nobody)')
    pred = [(ids[ids != -1], boxes[ids != -1]) for ids, boxes in pred]
    acc = motmetrics.MOTAccumulator(auto_id=True)
    similarities = []
    for (gt_ids, gt_boxes), (pred_ids, pred_boxes) in zip(gt, pred):
        iou = box_iou(gt_boxes, pred_boxes)
        acc.update(gt_ids, pred_ids, np.where(iou >= iou_thr, 1.0 - iou, np.nan))
        similarities.append(iou)
    names = {'idf1': 'idf1', 'idp': 'idp', 'idr': 'idr', 'mota': 'mota', 'motp': 'motp',
             'id_switches': 'num_switches', 'false_positives': 'num_false_positives',
             'misses': 'num_misses', 'fragmentations': 'num_fragmentations',
             'mostly_tracked': 'mostly_tracked', 'mostly_lost': 'mostly_lost',
             'gt_tracks': 'num_unique_objects', 'gt_boxes': 'num_objects',
             'pred_boxes': 'num_predictions'}
    row = motmetrics.metrics.create().compute(acc, metrics=list(names.values()),
                                              name='all').iloc[0]
    ratios = ('idf1', 'idp', 'idr', 'mota', 'motp')
    out = {key: _ratio(row[name]) if key in ratios else int(row[name])
           for key, name in names.items()}
    out['motp_iou'] = 1.0 - out.pop('motp')  # motmetrics' MOTP is the mean distance 1 - IoU
    out['frames'] = len(gt)
    scores = hota([ids for ids, _ in gt], [ids for ids, _ in pred], similarities)
    out.update(hota=scores['hota'], deta=scores['deta'], assa=scores['assa'])
    return out


def hota(gt_ids, pred_ids, similarities, alphas=HOTA_ALPHAS):
    """HOTA, DetA and AssA (Luiten et al. 2021) of one sequence; return a dict.

    ``gt_ids[t]`` (n_t,), ``pred_ids[t]`` (m_t,): the track ids in frame t;
    ``similarities[t]`` (n_t, m_t) in [0, 1] (box IoU here). For each alpha, frame by frame,
    the Hungarian algorithm pairs GT and predictions maximising global alignment x similarity
    and keeps pairs with similarity >= alpha (TP; the rest FN and FP). DetA = TP / (TP + FN +
    FP); AssA = mean over TPs of |TPA| / (|TPA| + |FNA| + |FPA|) of the TP's id pair;
    HOTA_alpha = sqrt(DetA * AssA). ``hota``, ``deta``, ``assa``: means over ``alphas``;
    ``*_alpha``: the arrays.
    """
    gt_idx, n_gt = _dense([np.asarray(i) for i in gt_ids])
    pred_idx, n_pred = _dense([np.asarray(i) for i in pred_ids])
    sims = [np.asarray(s, np.float64).reshape(len(g), len(p))
            for s, g, p in zip(similarities, gt_idx, pred_idx)]
    # global alignment: the soft (similarity-weighted) Jaccard between every pair of ids
    potential = np.zeros((n_gt, n_pred))
    gt_count, pred_count = np.zeros((n_gt, 1)), np.zeros((1, n_pred))
    for g, p, sim in zip(gt_idx, pred_idx, sims):
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        potential[g[:, None], p[None, :]] += np.where(denom > _EPS, sim / np.where(
            denom > _EPS, denom, 1), 0)
        gt_count[g] += 1
        pred_count[0, p] += 1
    with np.errstate(invalid='ignore', divide='ignore'):
        alignment = potential / (gt_count + pred_count - potential)
    tp, fn, fp = (np.zeros(len(alphas)) for _ in range(3))
    matches = np.zeros((len(alphas), n_gt, n_pred))
    for g, p, sim in zip(gt_idx, pred_idx, sims):
        if len(g) == 0 or len(p) == 0:
            fn += len(g)
            fp += len(p)
            continue
        rows, cols = linear_sum_assignment(-(alignment[g[:, None], p[None, :]] * sim))
        for a, alpha in enumerate(alphas):
            ok = sim[rows, cols] >= alpha - _EPS
            tp[a] += ok.sum()
            fn[a] += len(g) - ok.sum()
            fp[a] += len(p) - ok.sum()
            matches[a, g[rows[ok]], p[cols[ok]]] += 1
    ass = matches / np.maximum(1, gt_count + pred_count - matches)
    assa = (matches * ass).sum(axis=(1, 2)) / np.maximum(1, tp)
    deta = tp / np.maximum(1, tp + fn + fp)
    hota_alpha = np.sqrt(deta * assa)
    return {'hota': float(hota_alpha.mean()), 'deta': float(deta.mean()),
            'assa': float(assa.mean()), 'hota_alpha': hota_alpha, 'deta_alpha': deta,
            'assa_alpha': assa}


def _tracks(frames, name):
    """[(ids (n,) int64, boxes (n, 4) float64)] of per-frame (track_id, box) lists."""
    out = []
    for t, frame in enumerate(frames):
        ids = np.asarray([int(i) for i, _ in frame], np.int64)
        boxes = np.asarray([np.asarray(b, np.float64).reshape(4) for _, b in frame],
                           np.float64).reshape(-1, 4)
        tracked = ids[ids != -1]
        if len(np.unique(tracked)) != len(tracked):
            raise ValueError(f'{name}[{t}] repeats a track id ({ids.tolist()}); a track is '
                             'one person, once per frame')
        out.append((ids, boxes))
    return out


def _dense(ids_per_frame):
    """Map arbitrary ids to 0..n-1; return (per-frame index arrays, n)."""
    every = np.unique(np.concatenate([np.zeros(0, np.int64)] + [np.asarray(i, np.int64)
                                                                for i in ids_per_frame]))
    return [np.searchsorted(every, np.asarray(i, np.int64)) for i in ids_per_frame], len(every)


def _ratio(value):
    """A float; NaN for motmetrics' undefined ratios (NaN or +-inf when there is no GT)."""
    value = float(value)
    return value if np.isfinite(value) else float('nan')


# -- 3D keypoints ----------------------------------------------------------------------------
def keypoint3d_metrics(gt_frames, pred_frames, iou_thr=IOU_THR):
    """Errors [m] of predicted 3D keypoints and positions against GT; return a dict.

    ``gt_frames[t]``: dicts with ``box`` (x1, y1, x2, y2), ``keypoints_3d`` (K, 3),
    ``visibility`` (K,) and ``position_3d`` (3,); ``pred_frames[t]``: dicts with ``box``,
    ``keypoints_3d`` (K, 3) (NaN: unknown) and optionally ``position_3d`` (3,) (default: the
    mean of the finite joints 5, 6, 11, 12; NaN when none is). In each frame predictions are
    matched to GT by :func:`match_boxes` (Hungarian on IoU >= ``iou_thr``).

    Counted: GT keypoints with v > 0. One is *valid* when its person is matched and the
    predicted point is finite; errors (Euclidean) only over valid ones. Returns
    ``kpt3d_err_median_m``, ``kpt3d_err_p90_m`` (linear interpolation), ``kpt3d_err_mean_m``,
    ``kpt3d_valid_fraction`` (valid / counted), ``position_err_median_m`` (matched GT persons
    with a finite predicted position), ``position_valid_fraction`` (their share of the GT
    persons), ``gt_keypoints``, ``valid_keypoints``, ``gt_persons``, ``matched_persons``.
    NaN where there is nothing to average.
    """
    if len(gt_frames) != len(pred_frames):
        raise ValueError(f'gt_frames has {len(gt_frames)} frames and pred_frames '
                         f'{len(pred_frames)}; give one list per frame to both')
    kpt_err, pos_err = [], []
    counted = persons = matched = 0
    for gt, pred in zip(gt_frames, pred_frames):
        persons += len(gt)
        counted += sum(int((np.asarray(g['visibility']) > 0).sum()) for g in gt)
        rows, cols, _ = match_boxes([g['box'] for g in gt], [p['box'] for p in pred], iou_thr)
        matched += len(rows)
        for r, c in zip(rows, cols):
            g, p = gt[r], pred[c]
            labelled = np.asarray(g['visibility']) > 0
            diff = (np.asarray(p['keypoints_3d'], np.float64)
                    - np.asarray(g['keypoints_3d'], np.float64))[labelled]
            err = np.linalg.norm(diff, axis=1)
            kpt_err += err[np.isfinite(err)].tolist()
            pos = np.linalg.norm(_position(p) - np.asarray(g['position_3d'], np.float64))
            if np.isfinite(pos):
                pos_err.append(float(pos))
    kpt_err = np.asarray(kpt_err)
    return {'kpt3d_err_median_m': _stat(np.median, kpt_err),
            'kpt3d_err_p90_m': _stat(lambda e: np.percentile(e, 90), kpt_err),
            'kpt3d_err_mean_m': _stat(np.mean, kpt_err),
            'kpt3d_valid_fraction': len(kpt_err) / counted if counted else float('nan'),
            'position_err_median_m': _stat(np.median, np.asarray(pos_err)),
            'position_valid_fraction': len(pos_err) / persons if persons else float('nan'),
            'gt_keypoints': counted, 'valid_keypoints': len(kpt_err), 'gt_persons': persons,
            'matched_persons': matched}


def _position(pred):
    if pred.get('position_3d') is not None:
        return np.asarray(pred['position_3d'], np.float64)
    torso = np.asarray(pred['keypoints_3d'], np.float64)[list(TORSO)]
    torso = torso[np.isfinite(torso).all(axis=1)]
    return torso.mean(axis=0) if len(torso) else np.full(3, np.nan)


def _stat(fn, values):
    return float(fn(values)) if len(values) else float('nan')


# -- ground truth ----------------------------------------------------------------------------
def gt_frames_from_coco(gt):
    """Per-image GT records of a COCO keypoint dict (the demo bag's gt.json), in images order.

    Returns a list (one per ``gt['images']`` entry) of dicts: ``track_id`` (-1 when absent),
    ``box`` (x1, y1, x2, y2) from the COCO ``bbox``, ``visibility`` (K,), ``keypoints_2d``
    (K, 2), and, when the annotation has them, ``keypoints_3d`` (K, 3) and ``position_3d``
    (3,). :func:`track_boxes` turns them into the input of :func:`tracking_metrics`.
    """
    frames = {im['id']: [] for im in gt['images']}
    for ann in gt['annotations']:
        kpts = np.asarray(ann['keypoints'], np.float64).reshape(-1, 3)
        x, y, w, h = ann['bbox']
        record = {'track_id': int(ann.get('track_id', -1)), 'box': (x, y, x + w, y + h),
                  'visibility': kpts[:, 2], 'keypoints_2d': kpts[:, :2]}
        if 'keypoints_3d' in ann:
            record['keypoints_3d'] = np.asarray(ann['keypoints_3d'], np.float64).reshape(-1, 3)
            record['position_3d'] = np.asarray(ann['position_3d'], np.float64)
        frames[ann['image_id']].append(record)
    return [frames[im['id']] for im in gt['images']]


def track_boxes(frames):
    """[(track_id, box)] per frame of record lists (as :func:`gt_frames_from_coco` returns)."""
    return [[(r['track_id'], r['box']) for r in frame] for frame in frames]
