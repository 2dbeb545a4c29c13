"""Shared post-processing on hand-made network outputs (no model needed)."""
import numpy as np

from rtmo_ros.engine import postprocess
from rtmo_ros.engine.preprocess import fit_letterbox


def outputs():
    """Four detections plus one zero-score padding row, in 640x640 network pixels."""
    dets = np.array([[10, 10, 110, 210, 0.9],
                     [20, 15, 120, 215, 0.8],     # IoU ~0.77 with row 0
                     [-30, 500, 50, 700, 0.5],    # outside the input: clamped
                     [300, 300, 400, 400, 0.05],  # below score_thr
                     [0, 0, 0, 0, 0.0]], np.float32)
    kpts = np.zeros((5, 17, 3), np.float32)
    kpts[..., 0] = dets[:, None, 0] + 5
    kpts[..., 1] = dets[:, None, 1] + 5
    kpts[..., 2] = 0.7
    return dets, kpts


def test_filter_clamp_and_map_back():
    dets, kpts = outputs()
    box = fit_letterbox((480, 720), (640, 640))  # scale 8/9, offset y 106.67
    poses = postprocess.to_poses(dets, kpts, box, (640, 640), score_thr=0.1)
    assert len(poses) == 3
    np.testing.assert_allclose(poses.scores, [0.9, 0.8, 0.5])
    # row 2 clamped to (0, 500, 50, 640) in the input, then mapped back
    np.testing.assert_allclose(poses.boxes[2], [0, (500 - 106.6667) * 9 / 8, 50 * 9 / 8,
                                                (640 - 106.6667) * 9 / 8], atol=1e-3)
    np.testing.assert_allclose(poses.keypoints[2, 0], [-25 * 9 / 8, (505 - 106.6667) * 9 / 8],
                               atol=1e-3)  # keypoints are not clamped
    assert poses.keypoint_scores.shape == (3, 17) and poses.keypoints.dtype == np.float32
    assert dets[2, 0] == -30  # the caller's arrays are untouched


def test_extra_nms_and_max_persons():
    dets, kpts = outputs()
    box = fit_letterbox((640, 640), (640, 640))
    assert len(postprocess.to_poses(dets, kpts, box, (640, 640), 0.1, nms_thr=0.5)) == 2
    assert len(postprocess.to_poses(dets, kpts, box, (640, 640), 0.1, nms_thr=0.8)) == 3
    capped = postprocess.to_poses(dets, kpts, box, (640, 640), 0.1, max_persons=1)
    np.testing.assert_allclose(capped.scores, [0.9])


def test_empty_result_has_model_shapes():
    dets, kpts = outputs()
    box = fit_letterbox((480, 640), (640, 640))
    for args in [(dets, kpts, 0.99), (dets[:0], kpts[:0, :14], 0.1)]:
        poses = postprocess.to_poses(args[0], args[1], box, (640, 640), args[2])
        k = args[1].shape[1]
        assert len(poses) == 0
        assert poses.boxes.shape == (0, 4) and poses.keypoints.shape == (0, k, 2)
        assert poses.keypoint_scores.shape == (0, k) and poses.scores.shape == (0,)


def test_nms_is_strict_greedy_and_order_preserving():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 5, 10, 10], [50, 50, 60, 60]],
                     np.float32)
    # IoU(0, 1) = IoU(0, 2) = 0.5 exactly: kept at thr 0.5 (strict >), dropped at 0.49
    assert postprocess.nms(boxes, 0.5).tolist() == [0, 1, 2, 3]
    assert postprocess.nms(boxes, 0.49).tolist() == [0, 3]
    assert postprocess.nms(boxes[:0], 0.5).tolist() == []
