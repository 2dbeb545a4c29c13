"""The engine's result type."""
from dataclasses import dataclass

import numpy as np


@dataclass
class Poses:
    """Every person found in one image, sorted by descending ``scores``.

    All coordinates are pixels of the original image (x right, y down, origin at the top-left
    corner). N may be 0: then every array is empty with the shapes below.

    boxes:           (N, 4) float32, x_min, y_min, x_max, y_max
    scores:          (N,) float32 in [0, 1], instance score (sigmoid of the class logit)
    keypoints:       (N, K, 2) float32, x, y; K is fixed by the skeleton, index = joint id
    keypoint_scores: (N, K) float32 in [0, 1], sigmoid of the visibility logit
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray

    def __len__(self):
        return len(self.scores)

    def check(self, num_keypoints):
        """Raise ValueError unless the arrays have the shapes above and finite values.

        Guards the consumers (messages, trackers) against a backend that returns NaN or the
        wrong keypoint count (a user-supplied engine, a broken GPU driver).
        """
        n = len(self.scores)
        shapes = {'boxes': (n, 4), 'scores': (n,), 'keypoints': (n, num_keypoints, 2),
                  'keypoint_scores': (n, num_keypoints)}
        for name, shape in shapes.items():
            array = getattr(self, name)
            if array.shape != shape:
                raise ValueError(f'the backend returned {name} of shape {array.shape}, '
                                 f'expected {shape}: the model does not match its skeleton')
            if not np.isfinite(array).all():
                raise ValueError(f'the backend returned non-finite {name} (NaN or inf); '
                                 'check the model file and the device')

    @classmethod
    def empty(cls, num_keypoints):
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0, num_keypoints, 2), np.float32),
                   np.zeros((0, num_keypoints), np.float32))
