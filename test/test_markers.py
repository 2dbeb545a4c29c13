"""PersonArray -> MarkerArray: DELETEALL first, bones and joints on the documented plane."""
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
