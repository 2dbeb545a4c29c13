"""Pure conversions from the engine's :class:`Poses` to ROS messages (no node needed).

Pixel convention everywhere: the source image's pixels, x right, y down, origin at the
top-left corner (see ``rtmo_msgs/msg/Keypoint2D.msg``).
"""
import math

from geometry_msgs.msg import Point, Vector3

from rtmo_msgs.msg import Keypoint2D, Person, PersonArray, SkeletonInfo

from .cdr import person_array_cdr

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


def poses_to_person_array(poses, header, skeleton_name, tracked=None):
    """Return a ``PersonArray`` holding every person and every keypoint of ``poses``.

    ``poses``: :class:`rtmo_ros.engine.Poses` in image pixels, sorted by descending score.
    ``header``: the source image's header, copied unchanged. ``tracked``: the
    :class:`rtmo_ros.perception.Tracked` of these poses (track ids, smoothed keypoints, 3D,
    position, velocity); without it ``track_id`` is -1 and every 3D component NaN.
    """
    msg = PersonArray(header=header, skeleton=skeleton_name)
    n, k = poses.keypoints.shape[:2]
    boxes = poses.boxes.tolist()  # plain floats: message setters take float, not np.float32
    scores = poses.scores.tolist()
    kpt_scores = poses.keypoint_scores.tolist()
    if tracked is None:
        ids, kpts = [-1] * n, poses.keypoints.tolist()
        kpts_3d = position = velocity = None
    else:
        ids, kpts = tracked.track_ids.tolist(), tracked.keypoints.tolist()
        kpts_3d, position = tracked.keypoints_3d.tolist(), tracked.position.tolist()
        velocity = tracked.velocity.tolist()
    nan = Point(x=math.nan, y=math.nan, z=math.nan)
    persons = []
    for i, (box, score, joints, joint_scores) in enumerate(zip(boxes, scores, kpts,
                                                               kpt_scores)):
        person = Person(score=score, x_min=box[0], y_min=box[1], x_max=box[2], y_max=box[3],
                        track_id=ids[i])
        person.keypoints = [Keypoint2D(x=xy[0], y=xy[1], score=s)
                            for xy, s in zip(joints, joint_scores)]
        if kpts_3d is None:
            person.keypoints_3d = [nan] * k  # serialised by value: sharing is safe
            person.position = nan
            person.velocity = Vector3(x=math.nan, y=math.nan, z=math.nan)
        else:
            person.keypoints_3d = [Point(x=p[0], y=p[1], z=p[2]) for p in kpts_3d[i]]
            person.position = Point(x=position[i][0], y=position[i][1], z=position[i][2])
            person.velocity = Vector3(x=velocity[i][0], y=velocity[i][1], z=velocity[i][2])
        persons.append(person)
    msg.persons = persons
    return msg


def person_array_bytes(poses, header, skeleton_name, tracked=None):
    """The serialized ``PersonArray`` of :func:`poses_to_person_array`, for ``publish(bytes)``.

    Written straight from the arrays (:func:`rtmo_ros.cdr.person_array_cdr`): no message
    objects, no rclpy serializer, a small fraction of their time on the latency path.
    """
    return person_array_cdr(poses, header, skeleton_name, tracked)


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


def poses_to_detections(poses, header, track_ids=None):
    """Return a ``vision_msgs/Detection2DArray`` with one 'person' detection per person.

    Boxes are centre + size in image pixels; ``Detection2D.id`` is the track id (as text;
    empty when untracked), so detections and PersonArray agree on who is who. Handles both
    layouts of ``BoundingBox2D.center``: vision_msgs >= 4 (Humble and newer) nests
    ``center.position.x``; older releases (Foxy, Galactic) use geometry_msgs/Pose2D with
    ``center.x``.
    """
    msg = Detection2DArray(header=header)
    ids = [-1] * len(poses) if track_ids is None else track_ids.tolist()
    for box, score, track_id in zip(poses.boxes.tolist(), poses.scores.tolist(), ids):
        det = Detection2D(header=header, bbox=_bbox(box))
        if track_id >= 0 and hasattr(det, 'id'):  # vision_msgs >= 3
            det.id = str(track_id)
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
