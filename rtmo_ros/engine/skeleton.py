"""Skeleton tables: keypoint names, drawing edges, flip pairs and OKS sigmas.

Pure data, shared by the engine, the ROS layer and ``rtmo_train``. Keypoint order is the
dataset's; the index of a keypoint is its joint id everywhere in this project.
Sources: mmpose 1.3.2 ``configs/_base_/datasets/coco.py`` and ``crowdpose.py`` (names, flip
indices, sigmas); the COCO drawing edges are those of the COCO keypoint annotation file.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    """A keypoint layout: ``names[k]`` is joint k; ``edges`` are (a, b) index pairs to draw."""

    name: str
    names: tuple
    edges: tuple
    flip_indices: tuple
    sigmas: tuple

    @property
    def num_keypoints(self):
        return len(self.names)

    def sigmas_array(self):
        return np.asarray(self.sigmas, dtype=np.float32)


COCO17 = Skeleton(
    name='coco17',
    names=('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
           'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
           'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
           'left_knee', 'right_knee', 'left_ankle', 'right_ankle'),
    edges=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
           (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
           (3, 5), (4, 6)),
    flip_indices=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    # COCO OKS sigmas (also the RTMO OKS loss / SimOTA sigmas for 17-keypoint models)
    sigmas=(.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
            .107, .107, .087, .087, .089, .089),
)

CROWDPOSE14 = Skeleton(
    name='crowdpose14',
    names=('left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
           'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
           'right_knee', 'left_ankle', 'right_ankle', 'top_head', 'neck'),
    edges=((12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7),
           (6, 7), (6, 8), (8, 10), (7, 9), (9, 11)),
    flip_indices=(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13),
    sigmas=(.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089,
            .079, .079),
)

SKELETONS = {s.name: s for s in (COCO17, CROWDPOSE14)}


def skeleton_for(num_keypoints):
    """Return the skeleton with ``num_keypoints`` joints (17: COCO, 14: CrowdPose)."""
    for skel in SKELETONS.values():
        if skel.num_keypoints == num_keypoints:
            return skel
    raise ValueError(f'no skeleton with {num_keypoints} keypoints; known: '
                     + ', '.join(f'{s.name} ({s.num_keypoints})' for s in SKELETONS.values()))
