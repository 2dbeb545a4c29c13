"""Pure conversions from the engine's :class:`Poses` to ROS messages (no node needed).

Pixel convention everywhere: the source image's pixels, x right, y down, origin at the
top-left corner (see ``rtmo_msgs/msg/Keypoint2D.msg``).
"""
import math

from geometry_msgs.msg import Point

from rtmo_msgs.msg import Keypoint2D, Person, PersonArray, SkeletonInfo

try:  # vision_msgs is optional (not on PyPI); detections are published only when present
    from vision_msgs.msg import (
        BoundingBox2D,
        Detection2D,
        Detection2DArray,
        ObjectHypothesisWithPose,
    )
except ImportError:  # pragma: no cover - depends on the installation
    Detection2DArray = None

PERSON_CLASS_ID = 'person'  # COCO class name of the only class RTMO detects


def poses_to_person_array(poses, header, skeleton_name):
    """Return a ``PersonArray`` holding every person and every keypoint of ``poses``.

    ``poses``: :class:`rtmo_ros.engine.Poses` in image pixels, sorted by descending score.
    ``header``: the source image's header, copied unchanged. ``track_id`` is -1 (not tracked)
    and every ``keypoints_3d`` component NaN (no depth).
    """
    msg = PersonArray(header=header, skeleton=skeleton_name)
    boxes = poses.boxes.tolist()  # plain floats: message setters take float, not np.float32
    scores = poses.scores.tolist()
    kpts = poses.keypoints.tolist()
    kpt_scores = poses.keypoint_scores.tolist()
    nan = Point(x=math.nan, y=math.nan, z=math.nan)
    persons = []
    for box, score, joints, joint_scores in zip(boxes, scores, kpts, kpt_scores):
        person = Person(score=score, x_min=box[0], y_min=box[1], x_max=box[2], y_max=box[3],
                        track_id=-1)
        person.keypoints = [Keypoint2D(x=xy[0], y=xy[1], score=s)
                            for xy, s in zip(joints, joint_scores)]
        person.keypoints_3d = [nan] * len(joints)  # serialised by value: sharing is safe
        persons.append(person)
    msg.persons = persons
    return msg


def skeleton_info(skeleton, model, input_size, backend, precision):
    """Return the ``SkeletonInfo`` describing ``skeleton`` and the loaded model.

    ``skeleton``: :class:`rtmo_ros.engine.skeleton.Skeleton`; ``input_size``: (W, H) px.
    """
    return SkeletonInfo(skeleton=skeleton.name, keypoint_names=list(skeleton.names),
                        edges=[int(i) for edge in skeleton.edges for i in edge],
                        model=str(model), input_width=int(input_size[0]),
                        input_height=int(input_size[1]), backend=backend, precision=precision)


def detections_available():
    """Return True when vision_msgs is importable (Detection2DArray can be published)."""
    return Detection2DArray is not None


def poses_to_detections(poses, header):
    """Return a ``vision_msgs/Detection2DArray`` with one 'person' detection per person.

    Boxes are centre + size in image pixels. Handles both layouts of ``BoundingBox2D.center``:
    vision_msgs >= 4 (Humble and newer) nests ``center.position.x``; older releases (Foxy,
    Galactic) use geometry_msgs/Pose2D with ``center.x``.
    """
    msg = Detection2DArray(header=header)
    for box, score in zip(poses.boxes.tolist(), poses.scores.tolist()):
        det = Detection2D(header=header, bbox=_bbox(box))
        det.results = [_hypothesis(score)]
        msg.detections.append(det)
    return msg


def _bbox(box):
    bbox = BoundingBox2D(size_x=box[2] - box[0], size_y=box[3] - box[1])
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    center = bbox.center.position if hasattr(bbox.center, 'position') else bbox.center
    center.x, center.y = cx, cy
    return bbox


def _hypothesis(score):
    result = ObjectHypothesisWithPose()
    if hasattr(result, 'hypothesis'):  # vision_msgs >= 3: ObjectHypothesis(class_id, score)
        result.hypothesis.class_id, result.hypothesis.score = PERSON_CLASS_ID, score
    else:  # vision_msgs 2: id + score directly on the result
        result.id, result.score = PERSON_CLASS_ID, score
    return result
