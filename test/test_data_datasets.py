"""COCO-format loading, body7-style combining, segmentation masks and the torch wrapper."""
import json

import cv2
import numpy as np
import pytest
import torch

from rtmo_ros.engine.skeleton import COCO17, CROWDPOSE14, Skeleton
from rtmo_train.data.batch import TrainDataset, build_train_loader, collate
from rtmo_train.data.coco import CocoKeypointDataset
from rtmo_train.data.combined import BODY7_TO_COCO, CombinedDataset, KeypointMapping
from rtmo_train.data.masks import decode_rle_string, segmentations_to_mask
from rtmo_train.data.pipeline import augment_preset, build_pipeline
from rtmo_train.data.synthetic import coco_person_category, make_dataset


def kpts(k, points):
    """COCO flat keypoints: ``points`` maps index -> (x, y, v)."""
    flat = [0.0] * (3 * k)
    for i, (x, y, v) in points.items():
        flat[3 * i:3 * i + 3] = [x, y, v]
    return flat


def write_set(tmp_path, k=17, images=None, anns=None, extra_img=None):
    (tmp_path / 'img').mkdir(exist_ok=True)
    images = images or [{'id': 7, 'file_name': 'a.png', 'width': 64, 'height': 48},
                        {'id': 8, 'file_name': 'b.png', 'width': 32, 'height': 32}]
    for img in images:
        img.update(extra_img or {})
        cv2.imwrite(str(tmp_path / 'img' / img['file_name']),
                    np.full((img['height'], img['width'], 3), img['id'], np.uint8))
    cat = coco_person_category() if k == 17 else {'id': 1, 'name': 'person',
                                                  'keypoints': list(CROWDPOSE14.names)}
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': [cat]}))
    return path


def coco_anns():
    return [
        {'id': 1, 'image_id': 7, 'category_id': 1, 'iscrowd': 0, 'area': 300.0,
         'bbox': [10, 5, 20, 30], 'num_keypoints': 2,
         'keypoints': kpts(17, {0: (15, 8, 2), 5: (12, 20, 1)})},
        {'id': 2, 'image_id': 7, 'category_id': 1, 'iscrowd': 0, 'area': 50.0,
         'bbox': [50, 40, 30, 20], 'num_keypoints': 1, 'keypoints': kpts(17, {3: (55, 45, 2)})},
        {'id': 3, 'image_id': 7, 'category_id': 1, 'iscrowd': 1, 'area': 80.0,
         'bbox': [0, 0, 10, 10], 'num_keypoints': 0, 'keypoints': kpts(17, {}),
         'segmentation': {'size': [48, 64], 'counts': [0, 5, 43, 5, 3019]}},
        {'id': 4, 'image_id': 7, 'category_id': 1, 'iscrowd': 0, 'area': 40.0,
         'bbox': [30, 30, 8, 8], 'num_keypoints': 0, 'keypoints': kpts(17, {}),
         'segmentation': [[30, 30, 38, 30, 38, 38, 30, 38]]},
    ]


def test_coco_dataset_parses_instances_and_invalid_segmentations(tmp_path):
    ds = CocoKeypointDataset(write_set(tmp_path, anns=coco_anns()), tmp_path / 'img')
    assert ds.skeleton is COCO17 and len(ds) == 1  # image 8 has no annotation
    s = ds.load(0)
    assert s['img'].shape == (48, 64, 3) and s['img'][0, 0, 0] == 7 and s['image_id'] == 7
    # xywh -> xyxy, clipped to [0, size - 1] as mmpose
    np.testing.assert_allclose(s['boxes'], [[10, 5, 30, 35], [50, 40, 63, 47]])
    assert s['keypoints'].shape == (2, 17, 2) and s['keypoints'].dtype == np.float32
    np.testing.assert_allclose(s['keypoints'][0, [0, 5]], [[15, 8], [12, 20]])
    assert s['keypoints_visible'][0, 0] == 1 and s['keypoints_visible'][0, 5] == 1
    assert s['keypoints_visible'][0].sum() == 2 and s['keypoints_visible_weights'].min() == 1
    np.testing.assert_allclose(s['areas'], [300, 50])
    assert len(s['invalid_segs']) == 2  # the crowd RLE and the keypoint-less polygon
    mask = segmentations_to_mask(s['invalid_segs'], 48, 64)
    assert mask[0:5, 0].all() and mask[0:5, 1].all() and not mask[6:, 0:2].any()
    assert mask[31:38, 31:38].all() and mask.sum() < 10 + 90
    s['keypoints'][:] = -1  # records are copied out, never shared
    assert ds.load(0)['keypoints'][0, 0, 0] == 15
    assert len(CocoKeypointDataset(tmp_path / 'ann.json', tmp_path / 'img',
                                   include_empty=True)) == 2


def test_crowdpose_layout_and_area_fallback(tmp_path):
    anns = [{'id': 1, 'image_id': 7, 'category_id': 1, 'iscrowd': 0, 'bbox': [0, 0, 20, 10],
             'num_keypoints': 1, 'keypoints': kpts(14, {12: (5, 2, 1)})}]
    path = write_set(tmp_path, k=14, anns=anns, extra_img={'crowdIndex': 0.4})
    ds = CocoKeypointDataset(path, tmp_path / 'img')
    assert ds.skeleton is CROWDPOSE14
    s = ds.annotations(0)
    assert s['crowd_index'] == pytest.approx(0.4)
    assert s['areas'][0] == pytest.approx(20 * 10 * 0.53)  # no 'area': 0.53 of the box
    custom = Skeleton('two', ('a', 'b'), (), (1, 0), (0.1, 0.1))
    with pytest.raises(ValueError, match='14 keypoints'):
        CocoKeypointDataset(path, tmp_path / 'img', skeleton=custom)


def test_missing_image_is_a_clear_error(tmp_path):
    path = write_set(tmp_path, anns=coco_anns())
    (tmp_path / 'img' / 'a.png').unlink()
    with pytest.raises(FileNotFoundError, match='a.png'):
        CocoKeypointDataset(path, tmp_path / 'img').load(0)


def test_rle_and_polygon_masks_match_the_coco_api():
    mask_api = pytest.importorskip('pycocotools.mask')  # xtcocotools' decode fails on numpy 2
    rng = np.random.default_rng(0)
    m = (rng.random((23, 31)) < 0.3).astype(np.uint8)
    m[5:15, 4:20] = 1
    rle = mask_api.encode(np.asfortranarray(m))
    counts = rle['counts'].decode()
    np.testing.assert_array_equal(segmentations_to_mask([{'size': [23, 31],
                                                          'counts': counts}], 23, 31), m)
    assert sum(decode_rle_string(counts)) == 23 * 31
    poly = [[3.5, 2.0, 25.0, 4.5, 20.0, 19.0, 6.0, 15.5]]
    ref = mask_api.decode(mask_api.merge(mask_api.frPyObjects(poly, 23, 31)))
    ours = segmentations_to_mask([poly], 23, 31)
    iou = (ours & ref).sum() / (ours | ref).sum()
    assert iou > 0.97


def test_keypoint_mapping_sets_weights_for_unmapped_keypoints():
    src = {'keypoints': np.arange(1 * 14 * 2, dtype=np.float32).reshape(1, 14, 2),
           'keypoints_visible': np.ones((1, 14), np.float32)}
    src['keypoints_visible'][0, 3] = 0
    out = KeypointMapping(17, BODY7_TO_COCO['crowdpose'] + [((12, 13), 0)])(src)
    assert out['keypoints'].shape == (1, 17, 2)
    np.testing.assert_array_equal(out['keypoints'][0, 5:17], np.arange(24).reshape(12, 2))
    np.testing.assert_allclose(out['keypoints'][0, 0], [25, 26])  # midpoint of 12 and 13
    np.testing.assert_array_equal(out['keypoints_visible_weights'][0],
                                  [1, 0, 0, 0, 0] + [1] * 12)
    assert out['keypoints_visible'][0, 1:5].sum() == 0 and out['keypoints_visible'][0, 8] == 0
    with pytest.raises(ValueError, match='target index 17'):
        KeypointMapping(17, [(0, 17)])


def test_combined_dataset_maps_and_resamples(tmp_path):
    coco = CocoKeypointDataset(make_dataset(str(tmp_path / 'a'), 6, seed=1), tmp_path / 'a' /
                               'images', include_empty=True)
    crowd_json = json.loads((tmp_path / 'a' / 'annotations.json').read_text())
    # the same people as a 14-keypoint set (COCO 5..16 -> CrowdPose 0..11)
    crowd_json['categories'][0]['keypoints'] = list(CROWDPOSE14.names)
    for ann in crowd_json['annotations']:
        k = np.array(ann['keypoints']).reshape(17, 3)
        ann['keypoints'] = np.concatenate([k[5:17], np.zeros((2, 3))]).ravel().tolist()
        ann['num_keypoints'] = int((k[5:, 2] > 0).sum())
    (tmp_path / 'crowd.json').write_text(json.dumps(crowd_json))
    crowd = CocoKeypointDataset(tmp_path / 'crowd.json', tmp_path / 'a' / 'images',
                                include_empty=True)
    combined = CombinedDataset([(coco, None, 1.0), (crowd, BODY7_TO_COCO['crowdpose'], 0.5)],
                               COCO17)
    assert len(combined) == 6 + 3
    rng = np.random.default_rng(0)
    seen = {combined.locate(i, rng)[1] for i in range(6, 9) for _ in range(20)}
    assert seen <= set(range(6)) and len(seen) > 3
    img_index = next(i for i in range(6) if len(coco.annotations(i)['boxes']))
    mapped = combined.datasets[1].load(img_index)
    mapped = combined.mappings[1](mapped)
    direct = coco.load(img_index)
    np.testing.assert_array_equal(mapped['img'], direct['img'])
    keep = direct['keypoints_visible'][:, 5:].sum(axis=1) > 0  # face-only people drop out
    np.testing.assert_allclose(mapped['keypoints'][:, 5:], direct['keypoints'][keep, 5:])
    assert mapped['keypoints_visible_weights'][:, :5].sum() == 0


def test_train_dataset_is_reproducible_with_workers(tmp_path):
    ds = CocoKeypointDataset(make_dataset(str(tmp_path), 6, seed=2, width=160, height=120),
                             tmp_path / 'images')
    pipe = build_pipeline(1, augment_preset('t', 'coco'), ds)

    def batches(workers):
        loader = build_train_loader(ds, pipe, batch_size=2, num_workers=workers, seed=5)
        return [b for _, b in zip(range(2), loader)]

    a, b = batches(2), batches(2)
    for (xa, ta), (xb, tb) in zip(a, b):
        assert xa.shape == (2, 3, 416, 416)
        assert torch.equal(xa, xb)
        for u, v in zip(ta, tb):
            np.testing.assert_array_equal(u['keypoints'], v['keypoints'])
    assert not torch.equal(a[0][0], a[1][0])
    x, _ = collate([TrainDataset(ds, pipe, seed=5)[0]])
    assert x.shape == (1, 3, 416, 416)
