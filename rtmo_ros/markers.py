"""Pure conversion PersonArray -> visualization_msgs/MarkerArray for RViz.

Markers are drawn in the image's own frame (``header.frame_id``, a camera optical frame: x
right, y down, z forward). Where a joint sits, best source first:

1. its 3D point (``keypoints_3d``, from the depth image): the skeleton stands where the person
   is;
2. with the camera model (``camera``: a :class:`rtmo_ros.perception.PinholeCamera` from
   ``camera_info``), the back-projection of its pixel onto the plane z = ``depth``: the real
   intrinsics (focal lengths, principal point, distortion), so the skeleton overlays the
   camera image in RViz;
3. without one, pixel (u, v) of a W x H image becomes ``((u - W/2) * scale, (v - H/2) * scale,
   depth)`` [m]: with ``scale = depth / focal_length_px`` the same back-projection for a
   principal point at the image centre, else a flat drawing in front of the camera.

A person with any 3D joint is drawn in 3D; its other joints are left out (a joint at a guessed
depth would bend the skeleton). Every MarkerArray starts with a DELETEALL marker, so people who
left the image disappear; when nobody is seen the array holds only that DELETEALL. Per person
i there are markers with id i: namespace ``bones`` (LINE_LIST), ``joints`` (SPHERE_LIST) and,
for a tracked person, ``track_ids`` (TEXT_VIEW_FACING ``#id`` above the head), all in the
person's colour (its track id's colour when tracked, else its index's).
"""
from dataclasses import dataclass
import math

from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from rtmo_ros.engine.draw import person_color
from rtmo_ros.engine.skeleton import SKELETONS


@dataclass(frozen=True)
class MarkerStyle:
    """How persons are drawn: ``scale`` [m/px], ``depth`` [m], ``line_width`` and
    ``joint_size`` [m]; joints with score < ``keypoint_thr`` (and their bones) are left out."""

    scale: float = 0.002
    depth: float = 1.0
    line_width: float = 0.01
    joint_size: float = 0.02
    keypoint_thr: float = 0.3


def person_rgba(person, index):
    """Colour of a person: that of its track id when tracked (>= 0), else of its list index.

    The same colours as ``rtmo_ros.engine.draw`` (image_annotated, rtmo-pose CLI).
    """
    b, g, r = person_color(person.track_id if person.track_id >= 0 else index)
    return ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=1.0)


def person_array_to_markers(msg, image_size, style=MarkerStyle(), camera=None):
    """Return the MarkerArray drawing every person of a ``PersonArray``.

    ``image_size``: (W, H) of the source image in pixels; ``camera``: its PinholeCamera or None.
    """
    delete_all = Marker(header=msg.header, action=Marker.DELETEALL)
    markers = [delete_all]
    edges = SKELETONS[msg.skeleton].edges if msg.skeleton in SKELETONS else ()
    for index, person in enumerate(msg.persons):
        points = joint_points(person, image_size, style, camera)
        colour = person_rgba(person, index)
        bones = [p for i, j in edges if points[i] is not None and points[j] is not None
                 for p in (points[i], points[j])]
        joints = [p for p in points if p is not None]
        if bones:
            markers.append(_marker(msg.header, 'bones', index, Marker.LINE_LIST, bones, colour,
                                   style.line_width))
        if joints:
            markers.append(_marker(msg.header, 'joints', index, Marker.SPHERE_LIST, joints,
                                   colour, style.joint_size))
        if joints and person.track_id >= 0:
            markers.append(_label(msg.header, index, person.track_id, joints, colour, style))
    return MarkerArray(markers=markers)


def joint_points(person, image_size, style, camera=None):
    """The marker position of each joint of ``person`` (None: not drawn); see the module."""
    confident = [k.score >= style.keypoint_thr for k in person.keypoints]
    in_3d = [_finite(p) for p in person.keypoints_3d]
    if any(in_3d):
        return [Point(x=p.x, y=p.y, z=p.z) if ok and c else None
                for p, ok, c in zip(person.keypoints_3d, in_3d, confident)]
    if camera is not None:
        return _on_plane(person.keypoints, confident, camera, style.depth)
    return [_to_point(k, image_size, style) if c else None
            for k, c in zip(person.keypoints, confident)]


def _finite(point):
    return math.isfinite(point.x) and math.isfinite(point.y) and math.isfinite(point.z)


def _on_plane(keypoints, confident, camera, depth):
    import numpy as np

    uv = np.array([[k.x, k.y] for k in keypoints], np.float64).reshape(-1, 2)
    xyz = camera.backproject(uv, np.full(len(uv), depth)).tolist()
    return [Point(x=p[0], y=p[1], z=p[2]) if c else None for p, c in zip(xyz, confident)]


def _to_point(keypoint, image_size, style):
    return Point(x=(keypoint.x - 0.5 * image_size[0]) * style.scale,
                 y=(keypoint.y - 0.5 * image_size[1]) * style.scale, z=style.depth)


def _label(header, index, track_id, joints, colour, style):
    """``#id`` above the person's highest joint (smallest y: the optical frame's y is down)."""
    top = min(joints, key=lambda p: p.y)
    text = Marker(header=header, ns='track_ids', id=index, type=Marker.TEXT_VIEW_FACING,
                  action=Marker.ADD, color=colour, text=f'#{track_id}')
    text.pose.position = Point(x=top.x, y=top.y - 6 * style.joint_size, z=top.z)
    text.pose.orientation.w = 1.0
    text.scale.z = 5 * style.joint_size  # TEXT_VIEW_FACING: scale.z is the letter height
    return text


def _marker(header, ns, marker_id, marker_type, points, colour, size):
    marker = Marker(header=header, ns=ns, id=marker_id, type=marker_type, action=Marker.ADD,
                    points=points, color=colour)
    marker.pose.orientation.w = 1.0  # identity: points are already in the header's frame
    # LINE_LIST uses scale.x as the line width; SPHERE_LIST all three as the sphere size
    marker.scale.x = marker.scale.y = marker.scale.z = size
    return marker
