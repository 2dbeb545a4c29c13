"""Image -> network input, exactly as mmpose's RTMO test pipeline (BottomupResize 'fit').

Network input contract: float32 (3, H, W), BGR channel order, values 0..255, no mean/std.
The image is scaled to fit and **centred** on a canvas of pad value 114 by one affine warp
(mmpose ``BottomupResize(resize_mode='fit', pad_val=114)``; rtmlib pastes top-left instead).
"""
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114  # YOLOX / mmpose letterbox grey


@dataclass(frozen=True)
class Letterbox:
    """Where the image sits in the network input: ``p_net = p_img * scale + offset``."""

    scale: float
    offset_x: float
    offset_y: float

    def to_image(self, xy):
        """Map (..., 2) network-input pixels back to image pixels (a new float32 array)."""
        out = np.array(xy, dtype=np.float32)  # a copy; in-place ops below keep float32
        out -= (self.offset_x, self.offset_y)
        out /= self.scale
        return out

    def boxes_to_image(self, boxes):
        """Map (N, 4) xyxy boxes from network-input pixels to image pixels."""
        return self.to_image(np.asarray(boxes, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)


def fit_letterbox(image_hw, input_wh):
    """Return the centred 'fit' letterbox of an (h, w) image in an input of size (W, H)."""
    h, w = image_hw
    in_w, in_h = input_wh
    k = min(in_w / w, in_h / h)
    # mmpose maps the image centre (w/2, h/2) to the input centre (W/2, H/2)
    return Letterbox(k, (in_w - k * w) / 2.0, (in_h - k * h) / 2.0)


def check_image(image):
    """Raise ValueError unless ``image`` is an (H, W, 3) uint8 BGR array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f'image must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError('image must be an (H, W, 3) uint8 BGR array, got shape '
                         f'{image.shape} dtype {image.dtype}')
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f'image is empty: shape {image.shape}')


def letterbox_image(image_bgr, input_wh, out=None):
    """Warp an (H, W, 3) uint8 BGR image into the network input.

    Returns (input, Letterbox) where input is float32 (3, H_in, W_in) BGR 0..255. ``out``, if
    given, is a preallocated (3, H_in, W_in) float32 array that is filled and returned.
    """
    check_image(image_bgr)
    box = fit_letterbox(image_bgr.shape[:2], input_wh)
    matrix = np.array([[box.scale, 0.0, box.offset_x], [0.0, box.scale, box.offset_y]])
    warped = cv2.warpAffine(image_bgr, matrix, tuple(int(v) for v in input_wh),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    if out is None:
        out = np.empty((3,) + warped.shape[:2], np.float32)
    # one pass HWC uint8 -> CHW float32
    np.copyto(out, warped.transpose(2, 0, 1), casting='unsafe')
    return out, box
