"""COCO segmentations (polygons, uncompressed or compressed RLE) -> binary masks, in numpy.

Written out here so the training data path needs no COCO API; the encodings are those of
the COCO API (``pycocotools/_mask.pyx``: column-major runs starting with a 0-run; compressed
counts as 5-bit groups offset by 48, delta-coded from the run two back).
"""
import cv2
import numpy as np


def segmentations_to_mask(segs, height, width):
    """Union of COCO segmentations as an (height, width) uint8 mask (1 inside).

    Each entry is a polygon list ``[[x0, y0, x1, y1, ...], ...]`` or an RLE dict
    ``{'size': [h, w], 'counts': list | str}`` (crowd annotations).
    """
    mask = np.zeros((height, width), np.uint8)
    for seg in segs:
        if isinstance(seg, dict):
            mask |= rle_to_mask(seg, height, width)
        elif isinstance(seg, (list, tuple)):
            for poly in seg:
                pts = np.asarray(poly, np.float64).reshape(-1, 2)
                if len(pts) >= 3:
                    # 4 fractional bits: sub-pixel vertices as the COCO rasteriser
                    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1,
                                 lineType=cv2.LINE_8, shift=4)
        else:
            raise ValueError(f'unknown segmentation type {type(seg).__name__}; expected a '
                             'polygon list or an RLE dict')
    return mask


def rle_to_mask(rle, height, width):
    """Decode one COCO RLE (``counts`` list or compressed string) to (height, width) uint8."""
    h, w = rle.get('size', (height, width))
    counts = rle['counts']
    if isinstance(counts, (bytes, str)):
        counts = decode_rle_string(counts if isinstance(counts, str) else counts.decode())
    values = np.zeros(len(counts), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, np.asarray(counts, np.int64))
    if flat.size != h * w:
        raise ValueError(f'RLE counts cover {flat.size} pixels, size says {h}x{w}')
    mask = flat.reshape(w, h).T  # column-major
    if (h, w) != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(mask)


def decode_rle_string(s):
    """Compressed COCO RLE counts string -> list of run lengths."""
    counts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts
