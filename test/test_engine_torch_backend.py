"""The torch backend runs the mmpose checkpoint through rtmo_train and matches mmpose."""
import numpy as np
import pytest

from rtmo_ros.engine import PoseEstimator


@pytest.fixture(scope='module')
def torch_estimator(parity_dir):
    pytest.importorskip('torch')
    try:
        from rtmo_train import load_model  # noqa: F401
    except ImportError as err:
        pytest.skip(f'rtmo_train.load_model not importable yet: {err}')
    est = PoseEstimator(parity_dir / 'rtmo-s_coco_seed1.pth', backend='torch', device='cpu')
    yield est
    est.close()


def test_torch_backend_matches_mmpose(torch_estimator, parity_dir):
    ref = np.load(parity_dir / 'rtmo-s_coco_seed1_io.npz')
    poses = torch_estimator(ref['image_bgr'])
    assert torch_estimator.backend == 'torch' and torch_estimator.precision == 'fp32'
    assert torch_estimator.input_size == (640, 640) and torch_estimator.num_keypoints == 17
    assert len(poses) == len(ref['bbox_scores'])  # no keep-top-k cap: all 79
    dist = np.abs(poses.boxes[:, None] - ref['bboxes'][None]).max(-1)
    idx = dist.argmin(1)
    assert dist.min(1).max() < 0.05 and len(set(idx.tolist())) == len(idx)
    assert np.abs(poses.keypoints - ref['keypoints'][idx]).max() < 0.05
    assert np.abs(poses.scores - ref['bbox_scores'][idx]).max() < 1e-3
