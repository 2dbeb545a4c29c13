"""COCO / CrowdPose keypoint AP, computed exactly as mmpose's ``CocoMetric`` does for RTMO.

mmpose 1.3.2 ``evaluation/metrics/coco_metric.py`` with ``score_mode='bbox'`` and
``nms_mode='none'``: the instance score is the box score (no OKS rescoring, no extra NMS);
each result carries (x, y, keypoint score) triplets and the predicted box as xywh; xtcocotools
``COCOeval`` runs with the dataset's OKS sigmas and ``maxDets=[20]``.

- ``mode='coco'``: ``iouType='keypoints'``, ``use_area=True`` (OKS scale = GT ``area``).
- ``mode='crowdpose'``: ``iouType='keypoints_crowd'``, ``use_area=False`` (scale = 0.53 x GT box
  area; a GT with ``num_keypoints`` 0 is ignored) and AP(E/M/H) over images split by their
  ``crowdIndex`` (< 0.2 easy, < 0.8 medium, else hard), as xtcocotools' CrowdPose summary.

Predictions are in original-image pixels (the ``Poses`` contract of ``rtmo_ros.engine``).
"""
import contextlib
import io
import json
import os
import tempfile

import numpy as np

from rtmo_ros.engine.skeleton import skeleton_for

COCO_STATS = ('AP', 'AP .5', 'AP .75', 'AP (M)', 'AP (L)', 'AR', 'AR .5', 'AR .75', 'AR (M)',
              'AR (L)')
CROWDPOSE_STATS = ('AP', 'AP .5', 'AP .75', 'AR', 'AR .5', 'AR .75', 'AP(E)', 'AP(M)', 'AP(H)')
MODES = {'coco': ('keypoints', True, COCO_STATS),
         'crowdpose': ('keypoints_crowd', False, CROWDPOSE_STATS)}


def pose_results(image_id, boxes, scores, keypoints, keypoint_scores, category_id=1):
    """COCO result dicts of one image's people (mmpose ``results2json`` format).

    boxes (N, 4) xyxy, scores (N,) box scores, keypoints (N, K, 2), keypoint_scores (N, K);
    image pixels. Each result: ``image_id``, ``category_id``, ``keypoints`` [x, y, s] * K,
    ``score`` (= box score) and ``bbox`` [x, y, w, h].
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    kpts = np.asarray(keypoints, np.float64)
    triplets = np.concatenate([kpts, np.asarray(keypoint_scores, np.float64)[..., None]], -1)
    out = []
    for box, score, trip in zip(boxes, np.asarray(scores, np.float64), triplets):
        out.append({'image_id': int(image_id), 'category_id': int(category_id),
                    'keypoints': trip.reshape(-1).tolist(), 'score': float(score),
                    'bbox': [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    return out


def poses_results(poses_by_image):
    """COCO results of ``{image_id: Poses}`` (``rtmo_ros.engine.poses.Poses``, image pixels)."""
    out = []
    for image_id, p in poses_by_image.items():
        out += pose_results(image_id, p.boxes, p.scores, p.keypoints, p.keypoint_scores)
    return out


def write_predictions(results, path):
    """Write COCO keypoint results (a list of dicts) to ``path`` (``predictions.json``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(results, f)
    return str(path)


def evaluate_keypoints(gt, results, sigmas=None, mode='coco', verbose=False):
    """Keypoint AP/AR of ``results`` against the ground truth ``gt``.

    ``gt`` is a COCO keypoint annotation file path or the loaded dict (CrowdPose mode needs
    ``crowdIndex`` on every image). ``sigmas`` (K,) default to the skeleton with the GT's
    keypoint count. Returns a dict of floats keyed by :data:`COCO_STATS` or
    :data:`CROWDPOSE_STATS`; ``verbose`` prints the xtcocotools summary.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'coco' or 'crowdpose', got {mode!r}")
    iou_type, use_area, names = MODES[mode]
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = _gt_file(gt, tmp, mode)
        res_path = write_predictions(list(results), os.path.join(tmp, 'predictions.json'))
        stats, log = _run_cocoeval(gt_path, res_path, iou_type, use_area, sigmas)
    if verbose:
        print(log)
    return dict(zip(names, (float(s) for s in stats)))


def _gt_file(gt, tmp, mode):
    """Path of the GT json (written to ``tmp`` if given as a dict), checked for ``mode``."""
    if isinstance(gt, dict):
        data, path = gt, os.path.join(tmp, 'gt.json')
        with open(path, 'w') as f:
            json.dump(gt, f)
    else:
        path = str(gt)
        with open(path) as f:
            data = json.load(f)
    if mode == 'crowdpose':
        missing = [img['id'] for img in data['images'] if 'crowdIndex' not in img]
        if missing:
            raise ValueError(f'{path}: {len(missing)} images lack crowdIndex (e.g. id '
                             f"{missing[0]}); CrowdPose mode needs it, use mode='coco'")
    return path


def _run_cocoeval(gt_path, res_path, iou_type, use_area, sigmas):
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        coco = COCO(gt_path)
        if sigmas is None:
            num_kpts = len(coco.loadCats(coco.getCatIds())[0]['keypoints'])
            sigmas = skeleton_for(num_kpts).sigmas
        with open(res_path) as f:
            res_ids = {r['image_id'] for r in json.load(f)}
        unknown = res_ids - set(coco.getImgIds())
        if unknown:
            raise ValueError(f'predictions name image ids not in {gt_path}: '
                             f'{sorted(unknown)[:5]}; use the ids of the annotation file')
        dets = coco.loadRes(res_path)
        ev = COCOeval(coco, dets, iou_type, np.asarray(sigmas, np.float64), use_area)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats, log.getvalue()
