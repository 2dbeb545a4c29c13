"""Samples -> batches: a torch ``Dataset`` with seeded augmentation, collate, random resize.

Batch contract (what ``model.loss(inputs, targets)`` takes):

    inputs:   float32 tensor (B, 3, H, W), BGR, 0..255, no mean/std; images padded bottom/right
              with 0 to the largest H, W of the batch rounded up to a multiple of 32
    targets:  list of B dicts of numpy arrays, network-input pixels:
              boxes (N, 4) xyxy float32, keypoints (N, K, 2) float32,
              keypoints_visible (N, K) float32 in {0, 1},
              keypoints_visible_weights (N, K) float32 (visibility-loss weights),
              areas (N,) float32 (OKS scale, pixels^2),
              ignore_mask (H, W) float32 in [0, 1] (stage 2, only where the image has
              crowd/invalid segmentations; 1 = ignore)
"""
import numpy as np
import torch
import torch.nn.functional as F

from rtmo_train.data.pipeline import apply_pipeline

TARGET_KEYS = ('boxes', 'keypoints', 'keypoints_visible', 'keypoints_visible_weights', 'areas')
SIZE_DIVISOR = 32  # mmpose PoseDataPreprocessor pad_size_divisor; the head's largest stride


class TrainDataset(torch.utils.data.Dataset):
    """A dataset (``len``, ``load(index, rng)``) run through an augmentation pipeline.

    Randomness: each DataLoader worker owns a ``numpy.random.Generator`` seeded from
    ``(seed, torch worker seed)``; in the main process one seeded from ``(seed,)``. With a
    seeded DataLoader ``generator`` the batches are therefore reproducible for a given
    ``num_workers``. Rebuild the DataLoader after :meth:`set_pipeline` when workers persist.
    """

    def __init__(self, dataset, transforms, seed=0):
        self.dataset = dataset
        self.transforms = list(transforms)
        self.seed = int(seed)
        self._rng, self._rng_key = None, None

    def set_pipeline(self, transforms):
        """Switch to another transform list (e.g. stage 2)."""
        self.transforms = list(transforms)

    def rng(self):
        """The generator of the current process/worker (created on first use)."""
        info = torch.utils.data.get_worker_info()
        key = None if info is None else info.seed
        if self._rng is None or key != self._rng_key:
            entropy = [self.seed] if key is None else [self.seed, key % (1 << 63)]
            self._rng, self._rng_key = np.random.default_rng(entropy), key
        return self._rng

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        rng = self.rng()
        return apply_pipeline(self.transforms, self.dataset.load(int(index), rng), rng)


def collate(samples):
    """Stack pipeline outputs into ``(inputs, targets)`` as in the module contract."""
    h = max(s['img'].shape[0] for s in samples)
    w = max(s['img'].shape[1] for s in samples)
    h, w = (-(-h // SIZE_DIVISOR) * SIZE_DIVISOR, -(-w // SIZE_DIVISOR) * SIZE_DIVISOR)
    inputs = torch.zeros((len(samples), 3, h, w), dtype=torch.float32)
    targets = []
    for i, s in enumerate(samples):
        ih, iw = s['img'].shape[:2]
        inputs[i, :, :ih, :iw] = torch.from_numpy(s['img'].transpose(2, 0, 1).astype(np.float32))
        t = {k: np.ascontiguousarray(s[k], dtype=np.float32) for k in TARGET_KEYS if k in s}
        if 'keypoints_visible_weights' not in t:
            t['keypoints_visible_weights'] = np.ones_like(t['keypoints_visible'])
        if 'ignore_mask' in s:
            mask = np.zeros((h, w), np.float32)
            mask[:ih, :iw] = s['ignore_mask']
            t['ignore_mask'] = mask
        targets.append(t)
    return inputs, targets


class BatchRandomResize:
    """Resize whole batches to a random square side (mmpose ``BatchSyncRandomResize``).

    The size drawn after a batch applies to the next one (the first batch keeps its size):
    a multiple of ``divisor`` in ``size_range`` (inclusive), redrawn every ``interval`` calls.
    Bilinear resize (align_corners False); boxes and keypoints scale with x and y, areas with
    both, ``ignore_mask`` is resized bilinearly too.
    """

    def __init__(self, size_range=(480, 800), divisor=32, interval=1, seed=0):
        self.low = round(size_range[0] / divisor)
        self.high = round(size_range[1] / divisor)
        self.divisor = divisor
        self.interval = interval
        self.rng = np.random.default_rng(seed)
        self.size = None  # (h, w) for the next batch
        self.calls = 0

    def __call__(self, inputs, targets):
        h, w = inputs.shape[-2:]
        if self.size is None:
            self.size = (h, w)
        sy, sx = self.size[0] / h, self.size[1] / w
        if (sy, sx) != (1.0, 1.0):
            inputs = F.interpolate(inputs, size=self.size, mode='bilinear', align_corners=False)
            targets = [rescale_target(t, sx, sy, self.size) for t in targets]
        self.calls += 1
        if self.calls % self.interval == 0:
            side = int(self.rng.integers(self.low, self.high + 1))
            self.size = (self.divisor * side, self.divisor * int(w / h * side))
        return inputs, targets


def rescale_target(target, sx, sy, size_hw):
    """Return a copy of ``target`` with coordinates scaled by (sx, sy), mask resized."""
    t = dict(target)
    t['boxes'] = target['boxes'] * np.array([sx, sy, sx, sy], np.float32)
    t['keypoints'] = target['keypoints'] * np.array([sx, sy], np.float32)
    t['areas'] = target['areas'] * np.float32(sx * sy)
    if 'ignore_mask' in target:
        mask = torch.from_numpy(target['ignore_mask'])[None, None]
        t['ignore_mask'] = F.interpolate(mask, size=size_hw, mode='bilinear',
                                         align_corners=False)[0, 0].numpy()
    return t


def build_train_loader(dataset, transforms, batch_size, num_workers=0, seed=0, shuffle=True,
                       drop_last=True):
    """A DataLoader of ``(inputs, targets)`` batches, reproducible for a given ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        TrainDataset(dataset, transforms, seed), batch_size=batch_size, shuffle=shuffle,
        num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
        generator=generator, persistent_workers=num_workers > 0)
