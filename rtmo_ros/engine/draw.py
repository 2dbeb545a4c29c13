"""Draw poses on an image: boxes, bones and joints, one colour per person."""
import colorsys

import cv2
import numpy as np

UNTRACKED = (160, 160, 160)  # BGR grey: a person the tracker gave no id (with track_ids)


def person_color(index):
    """A BGR colour for person ``index``: hues spaced by the golden ratio stay distinct."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(255 * b), int(255 * g), int(255 * r)


def draw_poses(image_bgr, poses, skeleton, kpt_thr=0.3, draw_boxes=True, track_ids=None):
    """Return a copy of ``image_bgr`` with every person of ``poses`` drawn on it.

    ``poses`` is a :class:`~rtmo_ros.engine.poses.Poses` in this image's pixels and
    ``skeleton`` its :class:`~rtmo_ros.engine.skeleton.Skeleton`. Joints with a score
    <= ``kpt_thr`` and the bones touching them are not drawn. ``track_ids`` ((N,), -1 =
    untracked): each tracked person is drawn in its id's colour with ``#id`` at its box, the
    colours of the node's markers, and untracked ones in grey. The input is not modified.
    """
    canvas = image_bgr.copy()
    scale = max(canvas.shape[:2]) / 640.0
    thick = max(1, int(round(2 * scale)))
    radius = max(2, int(round(3 * scale)))
    ids = np.full(len(poses), -1) if track_ids is None else np.asarray(track_ids)
    for i in range(len(poses)):
        color = (person_color(ids[i]) if ids[i] >= 0
                 else person_color(i) if track_ids is None else UNTRACKED)
        x1, y1, x2, y2 = np.round(poses.boxes[i]).astype(int)
        if draw_boxes:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if ids[i] >= 0:
            cv2.putText(canvas, f'#{ids[i]}', (x1, max(y1 - 3 * thick, 10)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale + 0.2, color, thick, cv2.LINE_AA)
        pts = np.round(poses.keypoints[i]).astype(int)
        ok = poses.keypoint_scores[i] > kpt_thr
        for a, b in skeleton.edges:
            if ok[a] and ok[b]:
                cv2.line(canvas, tuple(pts[a]), tuple(pts[b]), color, thick, cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            cv2.circle(canvas, tuple(pts[k]), radius, color, -1, cv2.LINE_AA)
            cv2.circle(canvas, tuple(pts[k]), radius, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas
