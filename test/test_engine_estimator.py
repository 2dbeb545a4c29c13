"""PoseEstimator on ONNX Runtime over the official-format RTMO-s graph (mmdeploy export).

The session is created once per module: each run of the 640x640 graph costs ~0.2 s on CPU.
"""
import numpy as np
import pytest

from rtmo_ros.engine import PoseEstimator, Poses
from rtmo_ros.engine.preprocess import letterbox_image

ONNX = 'rtmo-s_coco_seed1_mmdeploy.onnx'


@pytest.fixture(scope='module')
def fixture_io(parity_dir):
    return dict(np.load(parity_dir / 'rtmo-s_coco_seed1_io.npz'))


@pytest.fixture(scope='module')
def estimator(parity_dir):
    est = PoseEstimator(parity_dir / ONNX, backend='onnxruntime', num_threads=2)
    yield est
    est.close()


def match_by_box(poses, ref_boxes):
    """Index of the reference row nearest to each predicted box, and that distance (px)."""
    dist = np.abs(poses.boxes[:, None, :] - ref_boxes[None]).max(-1)
    return dist.argmin(1), dist.min(1)


def test_preprocess_matches_mmpose_input(fixture_io):
    net_input, _ = letterbox_image(fixture_io['image_bgr'], (640, 640))
    # the fixture's input came from mmpose under OpenCV 4 (fixed-point warp); the letterbox
    # now gives OpenCV 5's pixels (bit for bit: test_letterbox_exact.py), which differ from
    # OpenCV 4's by one grey level on ~2.7 % of this image
    diff = np.abs(net_input - fixture_io['input'][0])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.03
    assert (net_input[:, :106] == 114).all() and (net_input[:, 534:] == 114).all()


def test_predictions_match_mmpose(estimator, fixture_io):
    poses = estimator(fixture_io['image_bgr'])
    # the graph keeps the 50 best after NMS; mmpose (no cap) found 79
    assert len(poses) == 50
    idx, box_err = match_by_box(poses, fixture_io['bboxes'])
    assert box_err.max() < 0.05
    assert len(set(idx.tolist())) == len(idx)
    assert np.abs(poses.keypoints - fixture_io['keypoints'][idx]).max() < 0.05
    assert np.abs(poses.scores - fixture_io['bbox_scores'][idx]).max() < 1e-3
    assert np.abs(poses.keypoint_scores - fixture_io['keypoint_scores'][idx]).max() < 1e-3
    assert np.all(np.diff(poses.scores) <= 0)
    times = estimator.timings
    assert times.inference_ms > 0 and times.preprocess_ms > 0 and times.postprocess_ms > 0


def test_batch_equals_single_calls(estimator, fixture_io):
    first = fixture_io['image_bgr']
    second = np.ascontiguousarray(first[40:400, 100:])  # another size, other letterbox
    singles = [estimator(first), estimator(second)]
    batched = estimator.batch([first, second])
    assert len(batched) == 2
    for one, many in zip(singles, batched):
        assert len(one) == len(many) > 0
        np.testing.assert_allclose(many.boxes, one.boxes, atol=1e-3)
        np.testing.assert_allclose(many.keypoints, one.keypoints, atol=1e-3)
        np.testing.assert_allclose(many.scores, one.scores, atol=1e-5)
    assert estimator.batch([]) == []


def test_nobody_found_gives_empty_arrays(estimator):
    grey = np.full((480, 640, 3), 114, np.uint8)
    estimator.score_thr = 0.99
    try:
        poses = estimator(grey)
    finally:
        estimator.score_thr = 0.1
    assert isinstance(poses, Poses) and len(poses) == 0
    assert poses.boxes.shape == (0, 4) and poses.scores.shape == (0,)
    assert poses.keypoints.shape == (0, 17, 2) and poses.keypoint_scores.shape == (0, 17)


def test_properties_for_the_node(estimator):
    assert estimator.backend == 'onnxruntime'
    assert estimator.precision == 'fp32'
    assert estimator.input_size == (640, 640)
    assert estimator.num_keypoints == 17
    assert estimator.skeleton.name == 'coco17'
    assert estimator.model_name == 'rtmo-s_coco_seed1_mmdeploy'


@pytest.mark.parametrize('image, words', [
    (np.zeros((48, 64, 3), np.float32), 'uint8'),
    (np.zeros((48, 64), np.uint8), '(H, W, 3)'),
    ('frame.png', 'numpy array'),
])
def test_wrong_image_is_rejected(estimator, image, words):
    with pytest.raises(ValueError, match=r'image must be'):
        estimator(image)


def test_closed_estimator_says_so(parity_dir):
    est = PoseEstimator(parity_dir / ONNX, backend='onnxruntime', num_threads=1)
    est.close()
    est.close()
    with pytest.raises(RuntimeError, match='closed'):
        est(np.zeros((8, 8, 3), np.uint8))
