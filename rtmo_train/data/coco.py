"""COCO keypoint-format datasets, loaded into one record per image (mmpose bottom-up mode).

Sample contract (what ``load`` returns and every transform takes and gives back):

    img:                        (H, W, 3) uint8, BGR
    boxes:                      (N, 4) float32, x_min, y_min, x_max, y_max, image pixels
    keypoints:                  (N, K, 2) float32, x, y, image pixels
    keypoints_visible:          (N, K) float32, min(1, COCO v): 1 labelled, 0 not
    keypoints_visible_weights:  (N, K) float32, weight of each keypoint in the visibility loss
                                (0 for keypoints a combined dataset cannot map; else 1)
    areas:                      (N,) float32, COCO ``area`` (pixels^2), the OKS scale
    invalid_segs:               list of COCO segmentations of crowd/invalid instances, the
                                stage-2 ignore mask is rasterised from them
    image_id, img_path:         where the sample came from

Instances are split as mmpose's ``_is_valid_instance`` does: crowd, no labelled keypoint, or
an empty box go to ``invalid_segs`` (their arrays are dropped; mmpose keeps them in the arrays
and ``FilterAnnotations`` removes them later, so training sees the same instances).
"""
import json
import os

import cv2
import numpy as np

from rtmo_ros.engine.skeleton import Skeleton, skeleton_for

INSTANCE_KEYS = ('boxes', 'keypoints', 'keypoints_visible', 'keypoints_visible_weights',
                 'areas')


def empty_instances(num_keypoints):
    """Return the instance arrays of a sample with no person (shapes as in the contract)."""
    k = num_keypoints
    return {'boxes': np.zeros((0, 4), np.float32),
            'keypoints': np.zeros((0, k, 2), np.float32),
            'keypoints_visible': np.zeros((0, k), np.float32),
            'keypoints_visible_weights': np.zeros((0, k), np.float32),
            'areas': np.zeros((0,), np.float32)}


def parse_annotation(ann, img_w, img_h, num_keypoints):
    """Parse one COCO person annotation into per-instance arrays (mmpose ``parse_data_info``).

    Returns a dict with ``box`` (4,) xyxy clipped to [0, size - 1], ``keypoints`` (K, 2),
    ``visible`` (K,), ``area`` and ``valid`` (False for crowd / unlabelled / empty box).
    """
    x, y, w, h = (float(v) for v in ann['bbox'])
    box = np.array([np.clip(x, 0, img_w - 1), np.clip(y, 0, img_h - 1),
                    np.clip(x + w, 0, img_w - 1), np.clip(y + h, 0, img_h - 1)], np.float32)
    kpts = np.asarray(ann['keypoints'], np.float32).reshape(-1, 3)
    if len(kpts) != num_keypoints:
        raise ValueError(f'annotation {ann.get("id")} has {len(kpts)} keypoints, the dataset '
                         f'skeleton has {num_keypoints}; pass the matching skeleton')
    if 'area' in ann:
        area = float(ann['area'])
    else:  # mmpose's fallback for sets without 'area' (CrowdPose): 0.53 of the box
        area = max((box[2] - box[0]) * (box[3] - box[1]) * 0.53, 1.0)
    num_labelled = ann.get('num_keypoints', int(np.count_nonzero(kpts[:, :2].max(axis=1))))
    valid = (not ann.get('iscrowd', 0) and num_labelled > 0 and box[2] > box[0]
             and box[3] > box[1] and kpts[:, :2].max() > 0)
    return {'box': box, 'keypoints': kpts[:, :2].copy(),
            'visible': np.minimum(1.0, kpts[:, 2]), 'area': area, 'valid': valid}


class CocoKeypointDataset:
    """A COCO keypoint annotation file plus its image folder, one record per image.

    ``skeleton`` gives names, flip indices and OKS sigmas; by default it is looked up from the
    keypoint count of the file's first category (17: COCO, 14: CrowdPose). Other layouts need
    an explicit :class:`~rtmo_ros.engine.skeleton.Skeleton`. With ``include_empty`` False
    (training, as mmpose) images without any annotation are left out.
    """

    def __init__(self, ann_file, img_dir, skeleton=None, include_empty=False):
        self.ann_file = str(ann_file)
        self.img_dir = str(img_dir)
        with open(self.ann_file) as f:
            coco = json.load(f)
        self.skeleton = skeleton if skeleton is not None else _skeleton_of(coco, self.ann_file)
        if not isinstance(self.skeleton, Skeleton):
            raise ValueError(f'skeleton must be a rtmo_ros.engine.skeleton.Skeleton, got '
                             f'{type(self.skeleton).__name__}')
        self.records = _build_records(coco, self.img_dir, self.skeleton.num_keypoints,
                                      include_empty)

    @property
    def num_keypoints(self):
        return self.skeleton.num_keypoints

    def __len__(self):
        return len(self.records)

    def annotations(self, index):
        """Return a copy of record ``index`` (everything of a sample but ``img``)."""
        rec = self.records[index]
        out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in rec.items()}
        out['invalid_segs'] = list(rec['invalid_segs'])
        return out

    def load(self, index, rng=None):
        """Return sample ``index`` with its image read from disk (``rng`` is unused here)."""
        sample = self.annotations(index)
        sample['img'] = read_image(sample['img_path'])
        return sample


def read_image(path):
    """Read an image file as (H, W, 3) uint8 BGR; raise FileNotFoundError naming the path."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'cannot read image {path}: check the dataset image folder')
    return img


def _skeleton_of(coco, path):
    cats = coco.get('categories') or []
    if not cats or 'keypoints' not in cats[0]:
        raise ValueError(f'{path}: categories[0] has no keypoint names; pass skeleton=')
    return skeleton_for(len(cats[0]['keypoints']))


def _build_records(coco, img_dir, num_keypoints, include_empty):
    anns_by_image = {}
    for ann in coco.get('annotations', []):
        if 'bbox' in ann and 'keypoints' in ann:  # mmpose drops anything else
            anns_by_image.setdefault(ann['image_id'], []).append(ann)
    records = []
    for img in coco['images']:
        anns = anns_by_image.get(img['id'], [])
        if anns or include_empty:
            records.append(_image_record(img, anns, img_dir, num_keypoints))
    return records


def _image_record(img, anns, img_dir, num_keypoints):
    rec = {'image_id': img['id'], 'img_path': os.path.join(img_dir, img['file_name']),
           'width': img['width'], 'height': img['height'], 'invalid_segs': []}
    if 'crowdIndex' in img:
        rec['crowd_index'] = float(img['crowdIndex'])
    parsed = [parse_annotation(a, img['width'], img['height'], num_keypoints) for a in anns]
    valid = [p for p in parsed if p['valid']]
    for ann, p in zip(anns, parsed):
        if not p['valid'] and ann.get('segmentation'):
            rec['invalid_segs'].append(ann['segmentation'])
    rec.update(empty_instances(num_keypoints))
    if valid:
        rec['boxes'] = np.stack([p['box'] for p in valid])
        rec['keypoints'] = np.stack([p['keypoints'] for p in valid])
        rec['keypoints_visible'] = np.stack([p['visible'] for p in valid])
        rec['keypoints_visible_weights'] = np.ones_like(rec['keypoints_visible'])
        rec['areas'] = np.array([p['area'] for p in valid], np.float32)
    return rec
