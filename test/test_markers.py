"""PersonArray -> MarkerArray: DELETEALL first, bones and joints on the documented plane."""
import math

import pytest

pytest.importorskip('rclpy')
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from rtmo_msgs.msg import Keypoint2D, Person, PersonArray  # noqa: E402
from rtmo_ros.engine.skeleton import COCO17  # noqa: E402
from rtmo_ros.markers import MarkerStyle, person_array_to_markers, person_rgba  # noqa: E402

STYLE = MarkerStyle(scale=0.01, depth=2.0, line_width=0.05, joint_size=0.1, keypoint_thr=0.5)


def person(track_id=-1, hidden=()):
    p = Person(score=0.9, track_id=track_id)
    p.keypoints = [Keypoint2D(x=10.0 * k, y=5.0 * k, score=0.1 if k in hidden else 0.9)
                   for k in range(17)]
    return p


def array(*persons):
    return PersonArray(header=Header(frame_id='cam_optical'), skeleton='coco17',
                       persons=list(persons))


def test_nobody_gives_only_deleteall():
    markers = person_array_to_markers(array(), (640, 480), STYLE).markers
    assert len(markers) == 1 and markers[0].action == Marker.DELETEALL
    assert markers[0].header.frame_id == 'cam_optical'


def test_each_person_has_bones_and_joints_on_the_marker_plane():
    markers = person_array_to_markers(array(person(), person()), (640, 480), STYLE).markers
    assert markers[0].action == Marker.DELETEALL
    kinds = [(m.ns, m.id, m.type) for m in markers[1:]]
    assert kinds == [('bones', 0, Marker.LINE_LIST), ('joints', 0, Marker.SPHERE_LIST),
                     ('bones', 1, Marker.LINE_LIST), ('joints', 1, Marker.SPHERE_LIST)]
    bones, joints = markers[1], markers[2]
    assert len(bones.points) == 2 * len(COCO17.edges) and len(joints.points) == 17
    # pixel (u, v) -> ((u - W/2) * scale, (v - H/2) * scale, depth)
    p5 = joints.points[5]
    assert (p5.x, p5.y, p5.z) == pytest.approx(((50 - 320) * 0.01, (25 - 240) * 0.01, 2.0))
    assert bones.scale.x == pytest.approx(0.05) and joints.scale.x == pytest.approx(0.1)
    assert all(m.header.frame_id == 'cam_optical' for m in markers)


def test_low_score_joints_and_their_bones_are_left_out():
    hidden = (9, 10)  # wrists: bones (7, 9) and (8, 10) go with them
    markers = person_array_to_markers(array(person(hidden=hidden)), (640, 480), STYLE).markers
    assert len(markers[2].points) == 15
    assert len(markers[1].points) == 2 * (len(COCO17.edges) - 2)


def test_colour_follows_the_track_id_when_tracked():
    tracked = person(track_id=7)
    assert person_rgba(tracked, 0) == person_rgba(person(), 7)
    assert person_rgba(person(), 0) != person_rgba(person(), 1)


def camera():
    from rtmo_ros.perception import PinholeCamera

    return PinholeCamera.from_fields(640, 480, [500.0, 0, 300, 0, 400.0, 200, 0, 0, 1],
                                     [0.0] * 5, [500.0, 0, 300, 0, 0, 400.0, 200, 0, 0, 0, 1, 0])


def test_with_camera_info_joints_are_back_projected_with_the_real_intrinsics():
    markers = person_array_to_markers(array(person()), (640, 480), STYLE, camera()).markers
    p5 = markers[2].points[5]  # pixel (50, 25) at depth 2 m through fx 500, fy 400, c (300, 200)
    assert (p5.x, p5.y, p5.z) == pytest.approx(((50 - 300) * 2 / 500, (25 - 200) * 2 / 400, 2))


def test_with_depth_the_skeleton_stands_at_its_3d_points_with_its_track_id():
    from geometry_msgs.msg import Point

    p = person(track_id=4)
    p.keypoints_3d = [Point(x=0.1 * k, y=0.2, z=3.0) for k in range(17)]
    p.keypoints_3d[0] = Point(x=math.nan, y=math.nan, z=math.nan)  # no depth at the nose
    markers = person_array_to_markers(array(p), (640, 480), STYLE, camera()).markers
    joints = markers[2].points
    assert len(joints) == 16 and (joints[4].x, joints[4].z) == pytest.approx((0.5, 3.0))
    label = markers[3]
    assert (label.ns, label.type, label.text) == ('track_ids', Marker.TEXT_VIEW_FACING, '#4')
    assert label.color == person_rgba(p, 0) and label.pose.position.z == pytest.approx(3.0)
