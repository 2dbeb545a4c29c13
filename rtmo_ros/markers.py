"""Pure conversion PersonArray -> visualization_msgs/MarkerArray for RViz.

Convention: markers are drawn in the image's own frame (``header.frame_id``, a camera optical
frame: x right, y down, z forward) on the plane z = ``depth``. Pixel (u, v) of a W x H image
becomes the point ``((u - W/2) * scale, (v - H/2) * scale, depth)`` [m]. With
``scale = depth / focal_length_px`` this is exactly the back-projection of the pixel onto that
plane (for a principal point at the image centre), so the skeletons overlay the camera image in
RViz; with any other scale they are a flat drawing of the image in front of the camera.

Every MarkerArray starts with a DELETEALL marker, so people who left the image disappear; when
nobody is seen the array holds only that DELETEALL. Per person i there are two markers with id i:
namespace ``bones`` (LINE_LIST) and ``joints`` (SPHERE_LIST), both in the person's colour (its
track id's colour when tracked, else its index's).
"""
from dataclasses import dataclass

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


def person_array_to_markers(msg, image_size, style=MarkerStyle()):
    """Return the MarkerArray drawing every person of a ``PersonArray``.

    ``image_size``: (W, H) of the source image in pixels (sets the plane's origin).
    """
    delete_all = Marker(header=msg.header, action=Marker.DELETEALL)
    markers = [delete_all]
    edges = SKELETONS[msg.skeleton].edges if msg.skeleton in SKELETONS else ()
    for index, person in enumerate(msg.persons):
        points = [_to_point(k, image_size, style) if k.score >= style.keypoint_thr else None
                  for k in person.keypoints]
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
    return MarkerArray(markers=markers)


def _to_point(keypoint, image_size, style):
    return Point(x=(keypoint.x - 0.5 * image_size[0]) * style.scale,
                 y=(keypoint.y - 0.5 * image_size[1]) * style.scale, z=style.depth)


def _marker(header, ns, marker_id, marker_type, points, colour, size):
    marker = Marker(header=header, ns=ns, id=marker_id, type=marker_type, action=Marker.ADD,
                    points=points, color=colour)
    marker.pose.orientation.w = 1.0  # identity: points are already in the header's frame
    # LINE_LIST uses scale.x as the line width; SPHERE_LIST all three as the sphere size
    marker.scale.x = marker.scale.y = marker.scale.z = size
    return marker
