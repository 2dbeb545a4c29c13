"""Augmentations keep annotations on the pixels they describe, and are deterministic by seed.

Each keypoint is drawn as a small blue Gaussian blob; after a transform the blob's centroid
must sit where the transformed keypoint says (within interpolation error).
"""
import numpy as np
import pytest
import torch

from rtmo_ros.engine.preprocess import letterbox_image
from rtmo_ros.engine.skeleton import COCO17
from rtmo_train.data.batch import BatchRandomResize, collate
from rtmo_train.data.pipeline import apply_pipeline, augment_preset, build_pipeline
from rtmo_train.data.transforms import (
    FilterAnnotations,
    IgnoreMask,
    MixUp,
    Mosaic,
    RandomAffine,
    RandomFlip,
)

K = 17


def blob_sample(h, w, people, seed=0):
    """A sample whose person i has keypoints ``people[i]`` (list of (k, x, y)) drawn as blobs."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = rng.integers(0, 40, (h, w))  # texture in green only: blobs are blue
    yy, xx = np.mgrid[0:h, 0:w]
    kpts = np.zeros((len(people), K, 2), np.float32)
    vis = np.zeros((len(people), K), np.float32)
    blue = np.zeros((h, w))
    for i, points in enumerate(people):
        for k, x, y in points:
            kpts[i, k] = (x, y)
            vis[i, k] = 1
            blue += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
    img[..., 0] = np.clip(blue, 0, 255).astype(np.uint8)
    img[..., 1] = np.minimum(img[..., 1], 255 - img[..., 0])
    boxes = np.array([[min(p[1] for p in pts) - 5, min(p[2] for p in pts) - 5,
                       max(p[1] for p in pts) + 5, max(p[2] for p in pts) + 5]
                      for pts in people], np.float32)
    return {'img': img, 'boxes': boxes, 'keypoints': kpts, 'keypoints_visible': vis,
            'keypoints_visible_weights': np.ones_like(vis),
            'areas': np.full(len(people), 400.0, np.float32), 'invalid_segs': [],
            'image_id': seed, 'img_path': f'mem://{seed}'}


def blob_centroid(img, xy, radius=5):
    """Centroid of the blue-only signal in a window around ``xy`` (None if no blob there)."""
    x0, y0 = int(round(xy[0])) - radius, int(round(xy[1])) - radius
    if x0 < 0 or y0 < 0 or x0 + 2 * radius >= img.shape[1] or y0 + 2 * radius >= img.shape[0]:
        return None
    win = img[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1].astype(np.float64)
    signal = np.clip(win[..., 0] - np.maximum(win[..., 1], win[..., 2]), 0, None)
    signal[signal < 40] = 0
    if signal.sum() < 200:
        return None
    yy, xx = np.mgrid[0:signal.shape[0], 0:signal.shape[1]]
    return np.array([(xx * signal).sum() / signal.sum() + x0,
                     (yy * signal).sum() / signal.sum() + y0])


def assert_blobs_follow(sample, tol=0.75, min_checked=1):
    """Every visible keypoint away from the border has its blob centred on it."""
    checked = 0
    for i, k in zip(*np.nonzero(sample['keypoints_visible'])):
        xy = sample['keypoints'][i, k]
        h, w = sample['img'].shape[:2]
        if not (7 <= xy[0] <= w - 8 and 7 <= xy[1] <= h - 8):
            continue  # blob cut by the border: nothing to measure
        c = blob_centroid(sample['img'], xy)
        assert c is not None, f'no blob at keypoint {k} of person {i} ({xy})'
        assert np.abs(c - xy).max() < tol, f'keypoint {k} at {xy}, its blob at {c}'
        checked += 1
    assert checked >= min_checked


class ListDataset:
    """The dataset protocol (len, load, skeleton) over in-memory samples."""

    skeleton = COCO17

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def load(self, index, rng=None):
        s = self.samples[index]
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}


def people_grid(h, w, rows, cols, seed):
    """A grid of single-keypoint 'people' at well-separated positions."""
    rng = np.random.default_rng(seed)
    people = []
    for r in range(rows):
        for c in range(cols):
            x = (c + 0.5) * w / cols + rng.uniform(-3, 3)
            y = (r + 0.5) * h / rows + rng.uniform(-3, 3)
            people.append([(int(rng.integers(K)), x, y)])
    return people


def dataset_of(n=4):
    shapes = [(300, 400), (480, 320), (250, 250), (360, 640)]
    return ListDataset([blob_sample(h, w, people_grid(h, w, 3, 4, i), seed=i)
                        for i, (h, w) in enumerate(shapes[:n])])


@pytest.mark.parametrize('mode', ['perspective', 'affine'])
def test_random_affine_moves_pixels_with_keypoints(mode):
    sample = blob_sample(400, 500, people_grid(400, 500, 4, 5, 1))
    affine = RandomAffine(320, mode, shift_factor=0.1, scale_factor=(0.7, 1.2),
                          rotate_factor=25, shear_factor=2.0, distribution='uniform')
    out = affine(sample, np.random.default_rng(3))
    assert out['img'].shape == (320, 320, 3)
    assert_blobs_follow(out, min_checked=5)


def test_random_affine_scales_area_by_determinant_and_clips():
    sample = blob_sample(300, 300, [[(0, 150, 150), (5, 20, 20)]])
    affine = RandomAffine(300, 'perspective', shift_factor=0, scale_factor=(0.5, 0.5),
                          rotate_factor=0, shear_factor=0, distribution='uniform')
    out = affine(sample, np.random.default_rng(0))
    assert out['areas'][0] == pytest.approx(400 * 0.25, rel=1e-5)
    # scale 0.5 about the centre: (20, 20) -> (85, 85); (150, 150) stays
    np.testing.assert_allclose(out['keypoints'][0, [0, 5]], [[150, 150], [85, 85]], atol=1e-3)
    big = RandomAffine(300, 'perspective', shift_factor=0, scale_factor=(3, 3), rotate_factor=0,
                       shear_factor=0, distribution='uniform')
    out = big(blob_sample(300, 300, [[(0, 150, 150), (5, 20, 20)]]), np.random.default_rng(0))
    assert out['keypoints_visible'][0, 5] == 0 and out['keypoints_visible'][0, 0] == 1
    assert out['boxes'].min() >= 0 and out['boxes'].max() <= 300


def test_stage2_fit_resize_equals_test_time_letterbox():
    img = np.random.default_rng(0).integers(0, 256, (240, 400, 3), dtype=np.uint8)
    sample = blob_sample(240, 400, [[(0, 100, 100)]])
    sample['img'] = img.copy()
    cfg = augment_preset('s', 'coco')
    affine = build_pipeline(2, cfg, ListDataset([sample]))[1]
    out = affine(sample, np.random.default_rng(0))
    expected, box = letterbox_image(img, (640, 640))
    # training warps with the installed OpenCV, as mmpose's training does; the test-time
    # letterbox gives OpenCV 5's pixels (test_letterbox_exact.py): one grey level apart at most
    diff = np.abs(out['img'].transpose(2, 0, 1) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05
    np.testing.assert_allclose(box.to_image(out['keypoints'][0, :1]), [[100, 100]], atol=1e-3)


def test_flip_mirrors_pixels_and_swaps_left_right():
    # left eye (1) at x=60 and right eye (2) at x=100: after a flip the person's left eye is
    # the blob that was the right eye, mirrored
    sample = blob_sample(120, 200, [[(1, 60, 50), (2, 100, 50), (0, 80, 70)]])
    sample['keypoints_visible'][0, 2] = 0.0  # right eye unlabelled
    out = RandomFlip(COCO17.flip_indices, prob=1.0)(sample, np.random.default_rng(0))
    np.testing.assert_allclose(out['keypoints'][0, 1], [199 - 100, 50])
    np.testing.assert_allclose(out['keypoints'][0, 2], [199 - 60, 50])
    assert out['keypoints_visible'][0, 1] == 0 and out['keypoints_visible'][0, 2] == 1
    np.testing.assert_allclose(out['boxes'][0], [199 - 105, 45, 199 - 55, 75])
    assert_blobs_follow(out, tol=0.3, min_checked=2)
    untouched = RandomFlip(COCO17.flip_indices, prob=0.0)(blob_sample(10, 10, [[(0, 5, 5)]]),
                                                          np.random.default_rng(0))
    assert untouched['keypoints'][0, 0, 0] == 5


def test_mosaic_places_four_images_with_their_annotations():
    data = dataset_of()
    mosaic = Mosaic(data, img_scale=320)
    out = mosaic(data.load(0), np.random.default_rng(5))
    assert out['img'].shape == (640, 640, 3)
    assert len(out['keypoints']) == 48  # 4 images x 12 people, clipped ones kept invisible
    assert out['areas'].dtype == np.float32
    assert_blobs_follow(out, tol=0.6, min_checked=10)


def test_mixup_blends_and_keeps_both_annotation_sets():
    data = dataset_of()
    base = blob_sample(320, 320, [[(0, 10, 10)]])
    base['img'][:] = 0  # no blobs in the base: every blob in the blend is the aux image's
    mix = MixUp(data, COCO17.flip_indices, img_scale=320, ratio_range=(0.8, 1.2))
    out = mix(base, np.random.default_rng(11))
    assert out['img'].shape == (320, 320, 3)
    assert len(out['keypoints']) > 1
    np.testing.assert_allclose(out['keypoints'][0, 0], [10, 10])
    # the 50/50 blend halves blob contrast: double it back before measuring
    half = dict(out, img=np.clip(out['img'].astype(np.int32) * 2, 0, 255).astype(np.uint8))
    half['keypoints_visible'] = out['keypoints_visible'].copy()
    half['keypoints_visible'][0] = 0
    # mmpose scales the aux boxes by the jitter factor, the pixels by int(S * jitter) / S:
    # under 1 px of drift at the far side, on top of the resize rounding
    assert_blobs_follow(half, tol=1.2, min_checked=5)


def test_filter_drops_tiny_and_invisible_instances():
    sample = blob_sample(100, 100, [[(0, 50, 50)], [(0, 20, 20)], [(0, 70, 70)]])
    sample['boxes'][1] = [10, 10, 10.5, 30]     # width 0.5
    sample['keypoints_visible'][2] = 0          # nothing visible
    out = FilterAnnotations()(sample)
    assert len(out['boxes']) == 1 and out['keypoints'][0, 0, 0] == 50


def test_ignore_mask_follows_the_image():
    sample = blob_sample(200, 300, [[(0, 150, 100)]])
    sample['invalid_segs'] = [[[20, 20, 80, 20, 80, 60, 20, 60]]]  # a 60x40 box polygon
    cfg = augment_preset('m', 'coco')  # stage 2 with random affine
    pipe = build_pipeline(2, cfg, ListDataset([sample]))
    assert isinstance(pipe[0], IgnoreMask)
    out = apply_pipeline(pipe[:2], sample, np.random.default_rng(4))
    m = out['ignore_mask']
    assert m.shape == (640, 640) and m.dtype == np.uint8
    corner = RandomAffine(640, 'affine', scale_type='long')  # same parameters, same draws
    mat = corner.matrix((300, 200), *corner.draw_params(np.random.default_rng(4)))
    centre = mat @ np.array([50.0, 40.0, 1.0])
    ys, xs = np.nonzero(m)
    np.testing.assert_allclose([xs.mean(), ys.mean()], centre[:2] / centre[2], atol=1.5)


def test_pipelines_are_deterministic_by_seed():
    data = dataset_of()
    for stage in (1, 2):
        pipe = build_pipeline(stage, augment_preset('s', 'coco'), data)
        a = apply_pipeline(pipe, data.load(1), np.random.default_rng(7))
        b = apply_pipeline(pipe, data.load(1), np.random.default_rng(7))
        c = apply_pipeline(pipe, data.load(1), np.random.default_rng(8))
        np.testing.assert_array_equal(a['img'], b['img'])
        np.testing.assert_array_equal(a['keypoints'], b['keypoints'])
        assert a['img'].shape == (640, 640, 3)
        assert not np.array_equal(a['img'], c['img'])


def test_collate_and_batch_random_resize():
    data = dataset_of()
    pipe = build_pipeline(1, augment_preset('t', 'coco'), data)
    samples = [apply_pipeline(pipe, data.load(i), np.random.default_rng(i)) for i in range(3)]
    inputs, targets = collate(samples)
    assert inputs.shape == (3, 3, 416, 416) and inputs.dtype == torch.float32
    np.testing.assert_array_equal(inputs[0].numpy(), samples[0]['img'].transpose(2, 0, 1))
    assert set(targets[0]) == {'boxes', 'keypoints', 'keypoints_visible',
                               'keypoints_visible_weights', 'areas'}
    resize = BatchRandomResize((320, 640), seed=0)
    same, _ = resize(inputs, targets)  # the first batch keeps its size
    assert same.shape[-2:] == (416, 416)
    out, scaled = resize(inputs, targets)
    side = out.shape[-1]
    assert out.shape[-2] == side and side % 32 == 0 and 320 <= side <= 640
    s = side / 416
    np.testing.assert_allclose(scaled[0]['keypoints'], targets[0]['keypoints'] * s, rtol=1e-6)
    np.testing.assert_allclose(scaled[0]['areas'], targets[0]['areas'] * s * s, rtol=1e-5)
