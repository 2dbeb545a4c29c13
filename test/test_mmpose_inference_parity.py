"""End-to-end parity with mmpose 1.3.2 itself (OpenCV 5): every variant, several input sizes.

References: test/references/mmpose_inference.npz, made by
``scripts/make_mmpose_references.py`` (mmpose's own test pipeline and ``test_step`` on
deterministic synthetic images, with seeded weights that ``seeded_state_dict`` rebuilds here
in float64-stable arithmetic). Detections are matched by box; within each match boxes and
keypoints agree to <= 0.05 px (image pixels), scores to <= 1e-3. Detections scoring within
1e-3 of the 0.1 threshold may be on one side only.
"""
import hashlib
import pathlib

import numpy as np
import pytest
from reference_script import REFS
import torch

from rtmo_ros.engine.preprocess import letterbox_image
from rtmo_train import build_model, preset

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO / 'test' / 'references' / 'mmpose_inference.npz'
TOL_PX, TOL_SCORE, SCORE_THR = 0.05, 1e-3, 0.1


CASES = [(name, size, wh) for name, size, images in REFS.INFERENCE_CASES for wh in images]
IDS = [f'{name}-{size}-{w}x{h}' for name, size, (w, h) in CASES]
ONNX_CASES = [c for c in CASES if (c[0], c[1]) in (('t_body7', 416), ('s_coco', 640))]


@pytest.fixture(scope='module')
def reference():
    return dict(np.load(REFERENCE))


@pytest.fixture(scope='module')
def state_dicts():
    return {name: REFS.seeded_state_dict(variant, kpts)
            for name, (variant, kpts, _, _) in REFS.MODELS.items()}


@pytest.fixture(scope='module')
def models(state_dicts):
    """(name, input size) -> our eval-mode RTMO with the seeded weights, built once."""
    cache = {}

    def get(name, size):
        if (name, size) not in cache:
            variant, kpts, _, _ = REFS.MODELS[name]
            model = build_model(preset(variant, num_keypoints=kpts, input_size=(size, size)))
            model.load_state_dict(state_dicts[name])
            cache[name, size] = model.eval()
        return cache[name, size]
    return get


def expected(reference, name, size, wh):
    key = f'{name}/{size}/{wh[0]}x{wh[1]}'
    return {f: reference[f'{key}/{f}']
            for f in ('bboxes', 'bbox_scores', 'keypoints', 'keypoint_scores')}


def compare(ours, ref):
    """Match detections; assert the tolerances; return the largest differences.

    ``ours`` and ``ref`` hold boxes (n, 4), scores (n,), keypoints (n, K, 2) and keypoint
    scores (n, K) in image pixels. Random weights give some identical boxes (clamped to the
    same image corner), so a match is the detection nearest in box, score and keypoints,
    each relative to its tolerance (cost <= 1: within every tolerance).
    """
    strong_ref = np.flatnonzero(ref[1] > SCORE_THR + TOL_SCORE)
    strong_ours = np.flatnonzero(ours[1] > SCORE_THR + TOL_SCORE)
    if len(strong_ref) == 0:  # random weights find nobody in some images: nor may we
        assert len(strong_ours) == 0, 'detections where mmpose has none'
        return {}
    cost = np.maximum.reduce([
        _pairwise(ref[0], ours[0]) / TOL_PX,
        _pairwise(ref[1][:, None], ours[1][:, None]) / TOL_SCORE,
        _pairwise(_flat(ref[2]), _flat(ours[2])) / TOL_PX,
        _pairwise(ref[3], ours[3]) / TOL_SCORE])
    assert cost.shape[1] and cost[strong_ref].min(1).max() <= 1.0, 'mmpose detection not found'
    assert not len(strong_ours) or cost[:, strong_ours].min(0).max() <= 1.0, \
        'a detection mmpose does not have'
    match = cost[strong_ref].argmin(1)
    return {name: float(np.abs(a[match] - b[strong_ref]).max())
            for name, a, b in zip(('box', 'score', 'keypoint', 'keypoint_score'), ours, ref)}


def _flat(keypoints):
    """(n, K, 2) -> (n, 2K), also for n = 0."""
    return keypoints.reshape(keypoints.shape[0], keypoints.shape[1] * 2)


def _pairwise(a, b):
    """(n, m) largest absolute difference between rows of (n, d) ``a`` and (m, d) ``b``."""
    if len(a) == 0 or len(b) == 0:
        return np.full((len(a), len(b)), np.inf)
    return np.abs(a[:, None] - b[None]).max(-1)


def test_reference_was_made_by_mmpose_with_opencv5(reference):
    assert str(reference['mmpose_version']) == '1.3.2'
    assert str(reference['opencv_version']).startswith('5.0')
    assert int(reference['seed']) == REFS.SEED


def test_seeded_weights_are_the_ones_mmpose_ran(reference, state_dicts):
    for name, sd in state_dicts.items():
        assert REFS.state_dict_sha256(sd) == str(reference[f'state_dict_sha256/{name}']), name


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_network_input_is_bit_identical_to_mmpose(reference, case):
    name, size, (w, h) = case
    net_input, _ = letterbox_image(REFS.synthetic_image(w, h), (size, size))
    digest = hashlib.sha256(net_input.tobytes()).hexdigest()
    assert digest == str(reference[f'{name}/{size}/{w}x{h}/input_sha256'])


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_torch_model_matches_mmpose(reference, models, case):
    name, size, wh = case
    with torch.no_grad():
        res = models(name, size).predict(REFS.synthetic_image(*wh))
    ref = expected(reference, name, size, wh)
    compare((res['boxes'], res['scores'], res['keypoints'], res['keypoint_scores']),
            (ref['bboxes'], ref['bbox_scores'], ref['keypoints'], ref['keypoint_scores']))


@pytest.fixture(scope='module')
def onnx_estimators(models, tmp_path_factory):
    """(name, size) -> PoseEstimator on the rtmo-export graph of the seeded model (CPU)."""
    from rtmo_ros.engine import PoseEstimator
    from rtmo_train.export import export_onnx
    cache = {}

    def get(name, size):
        if (name, size) not in cache:
            path = tmp_path_factory.mktemp('onnx') / f'{name}_{size}.onnx'
            export_onnx(models(name, size), path, max_detections=10 ** 6)  # every detection
            cache[name, size] = PoseEstimator(str(path), backend='onnxruntime', device='cpu')
        return cache[name, size]
    return get


@pytest.mark.parametrize('case', ONNX_CASES, ids=[IDS[CASES.index(c)] for c in ONNX_CASES])
def test_onnx_graph_through_pose_estimator_matches_mmpose(reference, onnx_estimators, case):
    name, size, wh = case
    poses = onnx_estimators(name, size)(REFS.synthetic_image(*wh))
    ref = expected(reference, name, size, wh)
    compare((poses.boxes, poses.scores, poses.keypoints, poses.keypoint_scores),
            (ref['bboxes'], ref['bbox_scores'], ref['keypoints'], ref['keypoint_scores']))
