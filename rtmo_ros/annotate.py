"""Draw persons on a BGR image (the node's ``image_annotated`` output)."""
import cv2
import numpy as np

from rtmo_ros.markers import PALETTE


def draw_poses(image_bgr, poses, edges, keypoint_thr=0.3):
    """Return a copy of an (H, W, 3) uint8 BGR image with boxes, bones and joints drawn.

    ``poses``: :class:`rtmo_ros.engine.Poses` in the image's pixels; ``edges``: (a, b) joint
    index pairs; joints with score < ``keypoint_thr`` (and their bones) are not drawn.
    Person i gets palette colour i, the same as its RViz markers.
    """
    canvas = image_bgr.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))  # ~1.6 px at 640 px wide
    for i in range(len(poses)):
        r, g, b = PALETTE[i % len(PALETTE)]
        colour = (int(255 * b), int(255 * g), int(255 * r))
        x0, y0, x1, y1 = np.round(poses.boxes[i]).astype(int).tolist()
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
        xy = np.round(poses.keypoints[i]).astype(int).tolist()
        ok = poses.keypoint_scores[i] >= keypoint_thr
        for a, c in edges:
            if ok[a] and ok[c]:
                cv2.line(canvas, tuple(xy[a]), tuple(xy[c]), colour, thickness, cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            cv2.circle(canvas, tuple(xy[k]), thickness + 2, colour, -1, cv2.LINE_AA)
    return canvas
