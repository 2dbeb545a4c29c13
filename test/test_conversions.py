"""Poses -> PersonArray / SkeletonInfo / Detection2DArray, as pure functions."""
import math

import numpy as np
import pytest

pytest.importorskip('rclpy')
from std_msgs.msg import Header  # noqa: E402

from rtmo_ros import conversions  # noqa: E402
from rtmo_ros.engine.poses import Poses  # noqa: E402
from rtmo_ros.engine.skeleton import COCO17  # noqa: E402


def some_poses(n=3, k=17):
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 500, (n, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]
    return Poses(boxes, np.sort(rng.uniform(0, 1, n).astype(np.float32))[::-1].copy(),
                 rng.uniform(0, 640, (n, k, 2)).astype(np.float32),
                 rng.uniform(0, 1, (n, k)).astype(np.float32))


def header():
    h = Header(frame_id='camera_optical')
    h.stamp.sec, h.stamp.nanosec = 1700000000, 42
    return h


def test_person_array_holds_every_person_and_keypoint_unchanged():
    poses = some_poses()
    msg = conversions.poses_to_person_array(poses, header(), 'coco17')
    assert msg.header == header() and msg.skeleton == 'coco17'
    assert len(msg.persons) == 3
    for i, person in enumerate(msg.persons):
        assert person.score == pytest.approx(float(poses.scores[i]))
        assert [person.x_min, person.y_min, person.x_max, person.y_max] == pytest.approx(
            poses.boxes[i].tolist())
        assert person.track_id == -1 and len(person.keypoints) == 17
        got = np.array([[k.x, k.y, k.score] for k in person.keypoints], np.float32)
        assert np.array_equal(got[:, :2], poses.keypoints[i])
        assert np.array_equal(got[:, 2], poses.keypoint_scores[i])
        assert len(person.keypoints_3d) == 17
        assert all(math.isnan(v) for p in person.keypoints_3d for v in (p.x, p.y, p.z))


def test_nobody_gives_an_empty_person_list_with_the_header():
    msg = conversions.poses_to_person_array(Poses.empty(17), header(), 'coco17')
    assert msg.persons == [] and msg.header.stamp.nanosec == 42


def test_skeleton_info_describes_skeleton_and_model():
    info = conversions.skeleton_info(COCO17, 'm.onnx', (640, 480), 'onnxruntime', 'fp32')
    assert info.keypoint_names == list(COCO17.names)
    assert list(info.edges) == [i for e in COCO17.edges for i in e]
    assert (info.input_width, info.input_height, info.backend) == (640, 480, 'onnxruntime')


@pytest.mark.skipif(not conversions.detections_available(), reason='vision_msgs not installed')
def test_detections_have_centre_size_and_person_class():
    poses = some_poses(2)
    msg = conversions.poses_to_detections(poses, header())
    assert msg.header == header() and len(msg.detections) == 2
    box = poses.boxes[0]
    bbox = msg.detections[0].bbox
    centre = bbox.center.position if hasattr(bbox.center, 'position') else bbox.center
    assert (centre.x, centre.y) == pytest.approx(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    assert bbox.size_x == pytest.approx(box[2] - box[0])
    hyp = msg.detections[0].results[0].hypothesis
    assert hyp.class_id == 'person' and hyp.score == pytest.approx(float(poses.scores[0]))


def test_tracked_people_carry_ids_smoothed_keypoints_3d_position_and_velocity():
    from rtmo_ros.perception import Tracked

    poses = some_poses(2)
    smoothed = poses.keypoints + 1.0
    kpts_3d = np.random.default_rng(2).uniform(1, 3, (2, 17, 3))
    kpts_3d[1, 4] = np.nan
    tracked = Tracked(np.array([5, -1]), smoothed, kpts_3d, np.array([[0.1, 0.2, 2.0],
                                                                      [np.nan] * 3]),
                      np.array([[1.0, 0.0, -0.5], [np.nan] * 3]), False)
    msg = conversions.poses_to_person_array(poses, header(), 'coco17', tracked)
    first, second = msg.persons
    assert (first.track_id, second.track_id) == (5, -1)
    assert first.keypoints[3].x == pytest.approx(float(smoothed[0, 3, 0]))
    assert first.keypoints[3].score == pytest.approx(float(poses.keypoint_scores[0, 3]))
    assert first.keypoints_3d[2].z == pytest.approx(kpts_3d[0, 2, 2])
    assert math.isnan(second.keypoints_3d[4].x)
    assert (first.position.z, first.velocity.x) == pytest.approx((2.0, 1.0))
    assert math.isnan(second.position.x) and math.isnan(second.velocity.z)


def test_untracked_people_have_nan_position_and_velocity():
    msg = conversions.poses_to_person_array(some_poses(1), header(), 'coco17')
    p = msg.persons[0]
    assert math.isnan(p.position.x) and math.isnan(p.velocity.y) and p.track_id == -1
