"""Several keypoint datasets trained as one (mmpose ``CombinedDataset`` + ``KeypointConverter``).

Each source is mapped onto the target skeleton by a list of ``(source_index, target_index)``
pairs (a source index may be a pair ``(a, b)``: the midpoint of two source keypoints, visible
when both are). Target keypoints no pair writes get visibility 0 **and** visibility-loss weight
0 (``keypoints_visible_weights``), so a dataset without, say, eyes does not teach the model that
eyes are invisible. Sample ratios resample each source to ``round(len * ratio)`` entries.
"""
import numpy as np

from rtmo_ros.engine.skeleton import Skeleton

# body7 -> COCO-17 mappings of the mmpose RTMO body7 configs
# (configs/body_2d_keypoint/rtmo/body7/rtmo-s_8xb32-600e_body7-640x640.py)
BODY7_TO_COCO = {
    'coco': [(i, i) for i in range(17)],
    'aic': [(0, 6), (1, 8), (2, 10), (3, 5), (4, 7), (5, 9), (6, 12), (7, 14), (8, 16),
            (9, 11), (10, 13), (11, 15)],
    'crowdpose': [(0, 5), (1, 6), (2, 7), (3, 8), (4, 9), (5, 10), (6, 11), (7, 12), (8, 13),
                  (9, 14), (10, 15), (11, 16)],
    'mpii': [(0, 16), (1, 14), (2, 12), (3, 11), (4, 13), (5, 15), (10, 10), (11, 8),
             (12, 6), (13, 5), (14, 7), (15, 9)],
    'jhmdb': [(3, 6), (4, 5), (5, 12), (6, 11), (7, 8), (8, 7), (9, 14), (10, 13), (11, 10),
              (12, 9), (13, 16), (14, 15)],
    'halpe': [(i, i) for i in range(17)],
    'posetrack': [(0, 0)] + [(i, i) for i in range(3, 17)],
}
# sample_ratio_factor of the same configs, in the order above
BODY7_SAMPLE_RATIOS = {'coco': 1.0, 'aic': 0.3, 'crowdpose': 0.5, 'mpii': 0.3, 'jhmdb': 0.3,
                       'halpe': 0.4, 'posetrack': 0.3}


class KeypointMapping:
    """Re-index the keypoints of a sample onto a ``num_keypoints`` target layout."""

    def __init__(self, num_keypoints, pairs):
        self.num_keypoints = int(num_keypoints)
        self.src_a, self.src_b, self.target = [], [], []
        for src, tgt in pairs:
            a, b = (src, src) if np.isscalar(src) else src
            if not 0 <= tgt < self.num_keypoints:
                raise ValueError(f'mapping target index {tgt} is outside 0..'
                                 f'{self.num_keypoints - 1}; fix the (source, target) pairs')
            self.src_a.append(int(a))
            self.src_b.append(int(b))
            self.target.append(int(tgt))

    def __call__(self, sample):
        """Map ``keypoints``/``keypoints_visible`` in place; set ``keypoints_visible_weights``."""
        kpts, vis = sample['keypoints'], sample['keypoints_visible']
        n = len(kpts)
        if self.src_a and max(self.src_a + self.src_b) >= kpts.shape[1]:
            raise ValueError(f'mapping reads source keypoint {max(self.src_a + self.src_b)} '
                             f'but the source has {kpts.shape[1]} keypoints')
        out_k = np.zeros((n, self.num_keypoints, 2), np.float32)
        out_v = np.zeros((n, self.num_keypoints), np.float32)
        out_w = np.zeros((n, self.num_keypoints), np.float32)
        out_k[:, self.target] = 0.5 * (kpts[:, self.src_a] + kpts[:, self.src_b])
        out_v[:, self.target] = vis[:, self.src_a] * vis[:, self.src_b]
        out_w[:, self.target] = 1.0
        if 'keypoints_visible_weights' in sample:  # keep a source's own zero weights
            w = sample['keypoints_visible_weights']
            out_w[:, self.target] *= w[:, self.src_a] * w[:, self.src_b]
        sample['keypoints'], sample['keypoints_visible'] = out_k, out_v
        sample['keypoints_visible_weights'] = out_w
        return sample


class CombinedDataset:
    """Concatenate datasets mapped onto one ``skeleton`` with per-source sample ratios.

    ``sources`` is a list of ``(dataset, pairs, ratio)``: ``pairs`` None means the source
    already has the target layout; ``ratio`` resamples it to ``round(len * ratio)`` entries
    (mmpose picks a random original index inside each resampled slot, hence ``rng``).
    """

    def __init__(self, sources, skeleton):
        if not isinstance(skeleton, Skeleton):
            raise ValueError('skeleton must be a rtmo_ros.engine.skeleton.Skeleton')
        self.skeleton = skeleton
        self.datasets, self.mappings, self.lengths = [], [], []
        for dataset, pairs, ratio in sources:
            if ratio < 0:
                raise ValueError(f'sample ratio {ratio} is negative; use a value >= 0')
            if pairs is None and dataset.skeleton.num_keypoints != skeleton.num_keypoints:
                raise ValueError(f'a source with {dataset.skeleton.num_keypoints} keypoints '
                                 f'needs a mapping to the {skeleton.num_keypoints}-keypoint '
                                 'target layout')
            self.datasets.append(dataset)
            self.mappings.append(None if pairs is None
                                 else KeypointMapping(skeleton.num_keypoints, pairs))
            self.lengths.append(int(round(len(dataset) * ratio)))

    @property
    def num_keypoints(self):
        return self.skeleton.num_keypoints

    def __len__(self):
        return sum(self.lengths)

    def locate(self, index, rng=None):
        """Return (source, local index) of combined ``index``; ``rng`` jitters resampling."""
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} is outside 0..{len(self) - 1}')
        source = 0
        while index >= self.lengths[source]:
            index -= self.lengths[source]
            source += 1
        n_orig = len(self.datasets[source])
        if self.lengths[source] == n_orig:
            return source, index
        gap = (n_orig - 1e-4) / self.lengths[source]
        jitter = rng.random() if rng is not None else 0.5
        return source, int(round(gap * index + jitter * gap - 0.5))

    def load(self, index, rng=None):
        """Return the sample at combined ``index``, mapped to the target skeleton."""
        source, local = self.locate(index, rng)
        sample = self.datasets[source].load(local, rng)
        if self.mappings[source] is not None:
            sample = self.mappings[source](sample)
        return sample
