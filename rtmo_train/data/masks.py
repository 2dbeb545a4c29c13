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
                    fill_polygon(mask, pts)
        else:
            raise ValueError(f'unknown segmentation type {type(seg).__name__}; expected a '
                             'polygon list or an RLE dict')
    return mask


def fill_polygon(mask, pts):
    """Set the pixels whose centre (x + 0.5, y + 0.5) lies inside polygon ``pts`` (even-odd).

    Pixel-centre sampling matches the COCO API's rasteriser closely (IoU ~0.99 on test
    shapes); ``cv2.fillPoly`` also fills every pixel the outline touches.
    """
    h, w = mask.shape
    x0, y0 = (max(0, int(np.floor(v))) for v in pts.min(axis=0))
    x1, y1 = (int(np.ceil(v)) for v in pts.max(axis=0))
    x1, y1 = min(w, x1 + 1), min(h, y1 + 1)
    if x0 >= x1 or y0 >= y1:
        return mask
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    inside = np.zeros(yy.shape, bool)
    for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
        if ay == by:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (ay > yy) != (by > yy)
        inside ^= crosses & (xx < ax + (bx - ax) * (yy - ay) / (by - ay))
    mask[y0:y1, x0:x1] |= inside.astype(np.uint8)
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
