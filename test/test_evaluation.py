"""COCO / CrowdPose keypoint AP: hand-computed cases and a cross-check with the COCO API."""
import json
import math

import numpy as np
import pytest

from rtmo_ros.engine.poses import Poses
from rtmo_ros.engine.skeleton import COCO17, CROWDPOSE14
from rtmo_train.evaluation import (
    COCO_STATS,
    evaluate_keypoints,
    pose_results,
    poses_results,
    write_predictions,
)

pytest.importorskip('xtcocotools')


def person(ann_id, image_id, x, y, k=17, area=None, scale=60.0, **extra):
    """A GT person with all ``k`` keypoints labelled around (x, y)."""
    rng = np.random.default_rng(ann_id)
    pts = np.stack([x + rng.uniform(0, scale, k), y + rng.uniform(0, 2 * scale, k)], 1)
    ann = {'id': ann_id, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
           'num_keypoints': k, 'bbox': [x, y, scale, 2 * scale],
           'keypoints': np.concatenate([pts, np.full((k, 1), 2.0)], 1).ravel().tolist()}
    if area is not None:
        ann['area'] = area
    ann.update(extra)
    return ann


def gt_set(anns, num_images, k=17, crowd_index=None):
    images = [{'id': i, 'file_name': f'{i}.jpg', 'width': 640, 'height': 480}
              for i in range(1, num_images + 1)]
    if crowd_index is not None:
        for img, c in zip(images, crowd_index):
            img['crowdIndex'] = c
    names = COCO17.names if k == 17 else CROWDPOSE14.names
    return {'images': images, 'annotations': anns,
            'categories': [{'id': 1, 'name': 'person', 'keypoints': list(names)}]}


def result(ann, score, shift=None):
    """A prediction of GT ``ann``; ``shift`` (K, 2) moves its keypoints."""
    k = np.array(ann['keypoints'], float).reshape(-1, 3)[:, :2]
    if shift is not None:
        k = k + shift
    x, y, w, h = ann['bbox']
    return pose_results(ann['image_id'], [[x, y, x + w, y + h]], [score], k[None],
                        np.full((1, len(k)), 0.9))[0]


def shift_for_oks(oks, area, sigmas):
    """Keypoint offsets (along x) that give exactly ``oks`` under the COCO OKS formula."""
    # OKS_k = exp(-d^2 / (2 * area * (2 sigma_k)^2))
    d = np.sqrt(-2 * area * (2 * np.asarray(sigmas)) ** 2 * math.log(oks))
    return np.stack([d, np.zeros_like(d)], 1)


def test_perfect_predictions_score_one():
    anns = [person(1, 1, 50, 40, area=5000.0), person(2, 1, 300, 200, area=12000.0),
            person(3, 2, 100, 100, area=2000.0)]
    stats = evaluate_keypoints(gt_set(anns, 2), [result(a, 0.9) for a in anns])
    assert list(stats) == list(COCO_STATS)
    assert all(v == pytest.approx(1.0) for v in stats.values())


def test_hand_computed_partial_matches():
    a = person(1, 1, 50, 40, area=6000.0)
    b = person(2, 2, 300, 200, area=6000.0)
    far = person(3, 2, 500, 300, area=6000.0)  # a false positive: not in the GT
    results = [result(far, 0.95), result(a, 0.9),
               result(b, 0.8, shift_for_oks(0.72, 6000.0, COCO17.sigmas))]
    stats = evaluate_keypoints(gt_set([a, b], 2), results)
    # thresholds 0.50..0.70: FP, TP, TP -> interpolated precision 2/3 at every recall;
    # thresholds 0.75..0.95: FP, TP, FP -> precision 1/2 up to recall 0.5 (51 of 101 points)
    hi = 0.5 * 51 / 101
    assert stats['AP'] == pytest.approx((5 * 2 / 3 + 5 * hi) / 10, abs=1e-9)
    assert stats['AP .5'] == pytest.approx(2 / 3, abs=1e-9)
    assert stats['AP .75'] == pytest.approx(hi, abs=1e-9)
    assert stats['AR'] == pytest.approx(0.75, abs=1e-9)
    # one of two people found, no false positive: AP = 51/101 (recall points 0..0.50)
    only_a = evaluate_keypoints(gt_set([a, b], 2), [result(a, 0.9)])
    assert only_a['AP'] == pytest.approx(51 / 101, abs=1e-9)


def test_matches_the_coco_api_run_directly(tmp_path):
    coco_api = pytest.importorskip('pycocotools.coco')
    cocoeval = pytest.importorskip('pycocotools.cocoeval')
    rng = np.random.default_rng(0)
    anns, results = [], []
    for i in range(12):
        size = rng.uniform(20, 150)
        ann = person(i + 1, i % 4 + 1, rng.uniform(0, 400), rng.uniform(0, 300),
                     area=float(size * size * 1.5), scale=size)
        anns.append(ann)
        if rng.random() < 0.8:
            results.append(result(ann, rng.uniform(0.3, 1.0), rng.normal(0, size / 12, (17, 2))))
    results.append(result(person(99, 1, 10, 10, scale=80), 0.7))  # a false positive
    gt = gt_set(anns, 4)
    ours = evaluate_keypoints(gt, results)
    (tmp_path / 'gt.json').write_text(json.dumps(gt))
    res_file = write_predictions(results, str(tmp_path / 'predictions.json'))
    coco = coco_api.COCO(str(tmp_path / 'gt.json'))
    ev = cocoeval.COCOeval(coco, coco.loadRes(res_file), 'keypoints')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    np.testing.assert_allclose(list(ours.values()), ev.stats, atol=1e-12)
    assert 0.2 < ours['AP'] < 0.95  # a case with real partial matches


def test_crowdpose_mode_on_a_tiny_crowd_set():
    k = 14
    easy = person(1, 1, 50, 40, k=k)
    medium = person(2, 2, 300, 200, k=k)
    hard = person(3, 3, 100, 100, k=k)
    unlabelled = person(4, 1, 400, 300, k=k, num_keypoints=0)  # ignored in keypoints_crowd
    gt = gt_set([easy, medium, hard, unlabelled], 3, k=k, crowd_index=[0.1, 0.5, 0.9])
    stats = evaluate_keypoints(gt, [result(easy, 0.9), result(hard, 0.8)], mode='crowdpose')
    assert list(stats) == ['AP', 'AP .5', 'AP .75', 'AR', 'AR .5', 'AR .75', 'AP(E)', 'AP(M)',
                           'AP(H)']
    assert stats['AP(E)'] == 1.0 and stats['AP(M)'] == 0.0 and stats['AP(H)'] == 1.0
    assert stats['AP'] == pytest.approx(67 / 101, abs=1e-9)  # recall 2/3, precision 1
    assert stats['AR'] == pytest.approx(2 / 3, abs=1e-9)
    del gt['images'][0]['crowdIndex']
    with pytest.raises(ValueError, match='crowdIndex'):
        evaluate_keypoints(gt, [], mode='crowdpose')


def test_poses_results_format(tmp_path):
    poses = Poses(np.array([[10, 20, 50, 100]], np.float32), np.array([0.8], np.float32),
                  np.arange(34, dtype=np.float32).reshape(1, 17, 2),
                  np.full((1, 17), 0.5, np.float32))
    (res,) = poses_results({42: poses, 43: Poses.empty(17)})
    assert res['image_id'] == 42 and res['category_id'] == 1
    assert res['score'] == pytest.approx(0.8) and res['bbox'] == [10, 20, 40, 80]
    assert res['keypoints'][:6] == [0, 1, 0.5, 2, 3, 0.5] and len(res['keypoints']) == 51
    path = write_predictions([res], str(tmp_path / 'out' / 'predictions.json'))
    assert json.load(open(path))[0]['image_id'] == 42
    with pytest.raises(ValueError, match='image ids'):
        evaluate_keypoints(gt_set([person(1, 1, 0, 0, area=100.0)], 1), [res])
