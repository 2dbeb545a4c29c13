"""The RTMO training augmentations as plain callables ``t(sample, rng) -> sample``.

Samples follow the contract in :mod:`rtmo_train.data.coco`; every random draw comes from the
``numpy.random.Generator`` passed in, so a pipeline is deterministic given its generator.
Behaviour follows mmpose 1.3.2 (``datasets/transforms/{mix_img_transforms,bottomup_transforms,
common_transforms}.py``), including its pixel conventions: a horizontal flip maps x to
``w - 1 - x``; keypoints outside ``[0, w] x [0, h]`` become invisible; boxes are clipped.
An optional ``ignore_mask`` ((H, W) uint8, 1 = ignore) follows every geometric transform.
"""
import math

import cv2
import numpy as np

from rtmo_train.data.coco import INSTANCE_KEYS, empty_instances
from rtmo_train.data.masks import segmentations_to_mask

PAD_VALUE = 114  # YOLOX grey of every RTMO config (Mosaic, affine, MixUp)


def select_instances(sample, keep):
    """Keep the instances where boolean/index array ``keep`` says so (in place)."""
    for key in INSTANCE_KEYS:
        if key in sample:
            sample[key] = sample[key][keep]
    return sample


def concat_instances(parts, num_keypoints):
    """Concatenate the instance arrays of several samples (the image is not touched)."""
    out = empty_instances(num_keypoints)
    for key in INSTANCE_KEYS:
        arrays = [p[key] for p in parts if key in p]
        if key == 'keypoints_visible_weights':  # default weight 1, as before mapping
            arrays = [p.get(key, np.ones_like(p['keypoints_visible'])) for p in parts]
        out[key] = np.concatenate([out[key]] + [np.asarray(a, np.float32) for a in arrays])
    return out


def clip_to_image(sample, width, height):
    """Clip boxes to ``[0, w] x [0, h]``; make keypoints outside it invisible (in place)."""
    boxes = sample['boxes']
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    kpts = sample['keypoints']
    outside = ((kpts[..., 0] < 0) | (kpts[..., 0] > width)
               | (kpts[..., 1] < 0) | (kpts[..., 1] > height))
    sample['keypoints_visible'][outside] = 0.0
    return sample


def scale_instances(sample, scale, dx=0.0, dy=0.0):
    """``p -> p * scale + (dx, dy)`` for boxes and keypoints, areas times scale^2 (in place)."""
    sample['boxes'] = sample['boxes'] * scale + np.array([dx, dy, dx, dy], np.float32)
    sample['keypoints'] = sample['keypoints'] * scale + np.array([dx, dy], np.float32)
    sample['areas'] = sample['areas'] * scale ** 2
    return sample


def flip_instances(sample, width, flip_indices):
    """Mirror boxes and keypoints of an image ``width`` wide; swap left/right keypoints."""
    boxes = sample['boxes']
    sample['boxes'] = np.stack([width - 1 - boxes[:, 2], boxes[:, 1],
                                width - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
    idx = list(flip_indices)
    for key in ('keypoints', 'keypoints_visible', 'keypoints_visible_weights'):
        if key in sample:
            sample[key] = sample[key][:, idx].copy()
    sample['keypoints'][..., 0] = width - 1 - sample['keypoints'][..., 0]
    return sample


def resize_keep_ratio(img, max_w, max_h):
    """Resize so the image fits ``max_w x max_h``; return (image, scale) (mmcv ``imresize``)."""
    h, w = img.shape[:2]
    r = min(max_h / h, max_w / w)
    return cv2.resize(img, (int(w * r), int(h * r)), interpolation=cv2.INTER_LINEAR), r


class Mosaic:
    """Four images on a 2S x 2S canvas around a random centre (YOLOX / mmpose ``Mosaic``).

    The sample is the top-left tile; three more are drawn from ``dataset``. Each is resized to
    fit S x S, pasted against the centre and cropped by the canvas. The ignore data of the
    tiles is dropped (stage 1 has no ignore mask).
    """

    def __init__(self, dataset, img_scale=640, center_range=(0.5, 1.5), pad_value=PAD_VALUE,
                 prob=1.0):
        self.dataset = dataset
        self.img_scale = int(img_scale)
        self.center_range = center_range
        self.pad_value = pad_value
        self.prob = prob

    def __call__(self, sample, rng):
        if rng.random() >= self.prob:
            return sample
        tiles = [sample] + [self.dataset.load(int(rng.integers(len(self.dataset))), rng)
                            for _ in range(3)]
        s = self.img_scale
        canvas = np.full((2 * s, 2 * s, 3), self.pad_value, np.uint8)
        center = (int(rng.uniform(*self.center_range) * s),
                  int(rng.uniform(*self.center_range) * s))
        parts = []
        for loc, tile in enumerate(tiles):
            img, r = resize_keep_ratio(tile['img'], s, s)
            (x1, y1, x2, y2), (cx1, cy1, cx2, cy2) = self._place(loc, center, img.shape)
            canvas[y1:y2, x1:x2] = img[cy1:cy2, cx1:cx2]
            parts.append(scale_instances(_instances(tile), r, x1 - cx1, y1 - cy1))
        out = {k: v for k, v in sample.items() if k not in INSTANCE_KEYS}
        out.update(concat_instances(parts, sample['keypoints'].shape[1]))
        out['img'], out['invalid_segs'] = canvas, []
        out.pop('ignore_mask', None)
        return clip_to_image(out, 2 * s, 2 * s)

    def _place(self, loc, center, shape):
        """Paste box on the canvas and crop box in the tile for tile ``loc`` (0 TL .. 3 BR)."""
        cx, cy = center
        h, w = shape[:2]
        size = 2 * self.img_scale
        if loc == 0:
            x1, y1, x2, y2 = max(cx - w, 0), max(cy - h, 0), cx, cy
            crop = (w - (x2 - x1), h - (y2 - y1), w, h)
        elif loc == 1:
            x1, y1, x2, y2 = cx, max(cy - h, 0), min(cx + w, size), cy
            crop = (0, h - (y2 - y1), min(w, x2 - x1), h)
        elif loc == 2:
            x1, y1, x2, y2 = max(cx - w, 0), cy, cx, min(size, cy + h)
            crop = (w - (x2 - x1), 0, w, min(y2 - y1, h))
        else:
            x1, y1, x2, y2 = cx, cy, min(cx + w, size), min(size, cy + h)
            crop = (0, 0, min(w, x2 - x1), min(y2 - y1, h))
        return (x1, y1, x2, y2), crop


class RandomAffine:
    """Random shift/scale/rotation(/shear) into a square input (``BottomupRandomAffine``).

    ``mode='perspective'`` (stage 1): ``M = T(c + shift * (W, H)) Shear R S T(-c)`` with ``c``
    the centre of the *output*, so input pixel (W/2, H/2) lands in the middle (after Mosaic
    that is canvas pixel (320, 320) for S = 640). ``mode='affine'`` (stage 2): the image centre
    (plus shift) goes to the output centre, scaled so its ``scale_type`` side fits; with all
    probabilities 0 this is the centred fit-resize of the test-time letterbox. Areas are
    multiplied by ``det(M)``. Factors are drawn uniform in [-1, 1] or from a normal truncated
    to [-1, 1] (``distribution='trunc_norm'``, mmpose's default).
    """

    def __init__(self, input_size=640, mode='perspective', shift_factor=0.2, shift_prob=1.0,
                 scale_factor=(0.75, 1.5), scale_prob=1.0, scale_type='short',
                 rotate_factor=30.0, rotate_prob=1.0, shear_factor=2.0, shear_prob=1.0,
                 distribution='trunc_norm', pad_value=PAD_VALUE):
        if mode not in ('perspective', 'affine'):
            raise ValueError(f"mode must be 'perspective' or 'affine', got {mode!r}")
        if distribution not in ('uniform', 'trunc_norm'):
            raise ValueError(f"distribution must be 'uniform' or 'trunc_norm', got "
                             f'{distribution!r}')
        if scale_type not in ('long', 'short'):
            raise ValueError(f"scale_type must be 'long' or 'short', got {scale_type!r}")
        self.size = int(input_size)
        self.mode, self.distribution, self.scale_type = mode, distribution, scale_type
        self.shift = (shift_factor, shift_prob)
        self.scale = (scale_factor, scale_prob)
        self.rotate = (rotate_factor, rotate_prob)
        self.shear = (shear_factor, shear_prob)
        self.pad_value = pad_value

    def _rand(self, rng, size):
        if self.distribution == 'uniform':
            return rng.uniform(-1.0, 1.0, size)
        out = rng.standard_normal(size)
        bad = np.abs(out) > 1
        while bad.any():  # rejection sampling of the [-1, 1]-truncated normal
            out[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(out) > 1
        return out

    def draw_params(self, rng):
        """Return (offset (2,), scale, rotation degrees, shear degrees (2,)), mmpose's order."""
        offset = self._rand(rng, 2) * self.shift[0] if rng.random() < self.shift[1] \
            else np.zeros(2)
        (s_min, s_max), s_prob = self.scale
        scale = s_min + (s_max - s_min) * (self._rand(rng, 1)[0] + 1) / 2 \
            if rng.random() < s_prob else 1.0
        rot = self._rand(rng, 1)[0] * self.rotate[0] if rng.random() < self.rotate[1] else 0.0
        shear = np.zeros(2)
        if self.mode == 'perspective' and rng.random() < self.shear[1]:
            shear = self._rand(rng, 2) * self.shear[0]
        return offset, float(scale), float(rot), shear

    def matrix(self, img_wh, offset, scale, rot, shear):
        """Return the 3x3 input -> output matrix for the given parameters."""
        n = float(self.size)
        if self.mode == 'perspective':
            return perspective_matrix((n / 2, n / 2), offset * n, scale, rot, shear)
        w, h = img_wh
        # mmpose _fix_aspect_ratio for a square output: fit the long (or short) side
        src_w = scale * (max(w, h) if self.scale_type == 'long' else min(w, h))
        center = np.array([w / 2.0, h / 2.0]) + offset * (w, h)
        return similarity_matrix(center, n / src_w, rot, (n / 2, n / 2))

    def __call__(self, sample, rng):
        h, w = sample['img'].shape[:2]
        m = self.matrix((w, h), *self.draw_params(rng))
        n = self.size
        border = (self.pad_value,) * 3
        if self.mode == 'perspective':
            sample['img'] = cv2.warpPerspective(sample['img'], m, (n, n), borderValue=border)
        else:
            sample['img'] = cv2.warpAffine(sample['img'], m[:2], (n, n),
                                           flags=cv2.INTER_LINEAR, borderValue=border)
        if 'ignore_mask' in sample:
            warped = cv2.warpPerspective(sample['ignore_mask'].astype(np.float32), m, (n, n),
                                         flags=cv2.INTER_LINEAR, borderValue=0)
            sample['ignore_mask'] = (warped > 0.5).astype(np.uint8)
        transform_instances(sample, m)
        return clip_to_image(sample, n, n)


def perspective_matrix(center, translate, scale, rot, shear):
    """``T(center + translate) Shear(shear) R(rot) S(scale) T(-center)`` (mmpose's order)."""
    t = np.array([[1, 0, center[0] + translate[0]], [0, 1, center[1] + translate[1]],
                  [0, 0, 1]])
    sh = np.array([[1, math.tan(math.radians(shear[0])), 0],
                   [math.tan(math.radians(shear[1])), 1, 0], [0, 0, 1]])
    a = math.radians(rot)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    s = np.diag([scale, scale, 1.0])
    back = np.array([[1, 0, -center[0]], [0, 1, -center[1]], [0, 0, 1]])
    return (t @ sh @ r @ s @ back).astype(np.float32)


def similarity_matrix(src_center, k, rot, dst_center):
    """Map ``src_center`` to ``dst_center``, scale ``k``, rotate by ``-rot`` degrees (3x3).

    Same matrix as mmpose ``get_warp_matrix`` (which rotates the source box by ``rot``).
    """
    a = math.radians(rot)
    c, s = k * math.cos(a), k * math.sin(a)
    lin = np.array([[c, s], [-s, c]])
    m = np.eye(3)
    m[:2, :2] = lin
    m[:2, 2] = np.asarray(dst_center) - lin @ np.asarray(src_center)
    return m.astype(np.float32)


def apply_matrix(points, m):
    """Apply a 3x3 (projective) matrix to (..., 2) points."""
    pts = np.asarray(points, np.float64)
    xyw = pts @ m[:, :2].T.astype(np.float64) + m[:, 2].astype(np.float64)
    return (xyw[..., :2] / xyw[..., 2:3]).astype(np.float32)


def transform_instances(sample, m):
    """Warp keypoints and boxes (box = extent of its 4 warped corners); areas *= det(M)."""
    sample['keypoints'] = apply_matrix(sample['keypoints'], m)
    b = sample['boxes']
    corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], axis=1)
    corners = apply_matrix(corners, m).reshape(-1, 4, 2)
    sample['boxes'] = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    sample['areas'] = (sample['areas'] * np.linalg.det(m.astype(np.float64))).astype(np.float32)
    return sample


class MixUp:
    """Blend 50/50 with a random image placed top-left, jittered, maybe flipped, cropped.

    YOLOX / mmpose ``YOLOXMixUp``; the auxiliary image comes raw from ``dataset``. A sample
    without people is left as it is, as is the input when the auxiliary image has none.
    """

    def __init__(self, dataset, flip_indices, img_scale=640, ratio_range=(0.8, 1.6),
                 flip_ratio=0.5, pad_value=PAD_VALUE, prob=1.0):
        self.dataset = dataset
        self.flip_indices = tuple(flip_indices)
        self.img_scale = int(img_scale)
        self.ratio_range = ratio_range
        self.flip_ratio = flip_ratio
        self.pad_value = pad_value
        self.prob = prob

    def __call__(self, sample, rng):
        if rng.random() >= self.prob:
            return sample
        aux = self.dataset.load(int(rng.integers(len(self.dataset))), rng)
        if len(aux['keypoints']) == 0:
            return sample
        s = self.img_scale
        layer = np.full((s, s, 3), self.pad_value, np.uint8)
        img, r = resize_keep_ratio(aux['img'], s, s)
        layer[:img.shape[0], :img.shape[1]] = img
        jit = rng.uniform(*self.ratio_range)
        r *= jit
        layer = cv2.resize(layer, (int(s * jit), int(s * jit)), interpolation=cv2.INTER_LINEAR)
        flip = rng.uniform(0, 1) > self.flip_ratio
        if flip:
            layer = layer[:, ::-1]
        h, w = sample['img'].shape[:2]
        aux_h, aux_w = layer.shape[:2]
        padded = np.full((max(aux_h, h), max(aux_w, w), 3), self.pad_value, np.uint8)
        padded[:aux_h, :aux_w] = layer
        dy = int(rng.integers(0, max(0, padded.shape[0] - h) + 1))
        dx = int(rng.integers(0, max(0, padded.shape[1] - w) + 1))
        crop = padded[dy:dy + h, dx:dx + w].astype(np.float32)
        # float blend truncated back to uint8, as mmpose's astype(np.uint8)
        sample['img'] = (0.5 * sample['img'] + 0.5 * crop).astype(np.uint8)
        aux = clip_to_image(scale_instances(_instances(aux), r), aux_w, aux_h)
        if flip:
            aux = flip_instances(aux, aux_w, self.flip_indices)
        aux = scale_instances(aux, 1.0, -dx, -dy)
        merged = concat_instances([sample, aux], sample['keypoints'].shape[1])
        sample.update(merged)
        return clip_to_image(sample, w, h)


class HSVAugment:
    """YOLOX HSV jitter: hue +-5, saturation +-30, value +-30, each applied with p = 0.5."""

    def __init__(self, hue_delta=5, saturation_delta=30, value_delta=30):
        self.deltas = np.array([hue_delta, saturation_delta, value_delta], np.float64)

    def __call__(self, sample, rng):
        gains = rng.uniform(-1, 1, 3) * self.deltas
        gains *= rng.integers(0, 2, 3)
        gains = gains.astype(np.int16)  # truncation toward 0, as mmpose
        hsv = cv2.cvtColor(sample['img'], cv2.COLOR_BGR2HSV).astype(np.int16)
        hsv[..., 0] = (hsv[..., 0] + gains[0]) % 180  # OpenCV 8-bit hue is 0..179
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[1], 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[2], 0, 255)
        sample['img'] = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        return sample


class RandomFlip:
    """Horizontal flip with probability ``prob``; left/right keypoints swap by flip indices."""

    def __init__(self, flip_indices, prob=0.5):
        self.flip_indices = tuple(flip_indices)
        self.prob = prob

    def __call__(self, sample, rng):
        if rng.random() >= self.prob:
            return sample
        sample['img'] = np.ascontiguousarray(sample['img'][:, ::-1])
        if 'ignore_mask' in sample:
            sample['ignore_mask'] = np.ascontiguousarray(sample['ignore_mask'][:, ::-1])
        return flip_instances(sample, sample['img'].shape[1], self.flip_indices)


class FilterAnnotations:
    """Drop instances with fewer than ``min_visible`` visible keypoints or a box side <= 1 px."""

    def __init__(self, min_wh=1.0, min_visible=1):
        self.min_wh = min_wh
        self.min_visible = min_visible

    def __call__(self, sample, rng=None):
        b = sample['boxes']
        keep = ((b[:, 2] - b[:, 0] > self.min_wh) & (b[:, 3] - b[:, 1] > self.min_wh)
                & (sample['keypoints_visible'].sum(axis=1) >= self.min_visible))
        return select_instances(sample, keep)


class IgnoreMask:
    """Rasterise the crowd/invalid segmentations into ``ignore_mask`` (stage 2 only).

    Added only when the sample has such segmentations; later geometric transforms carry it.
    mmpose's ``BottomupGetHeatmapMask(get_invalid=True)``.
    """

    def __call__(self, sample, rng=None):
        segs = sample.get('invalid_segs') or []
        if segs:
            h, w = sample['img'].shape[:2]
            sample['ignore_mask'] = segmentations_to_mask(segs, h, w)
        return sample


def _instances(sample):
    """Copy of just the instance arrays of ``sample``."""
    return {k: np.array(sample[k], np.float32) for k in INSTANCE_KEYS if k in sample}
