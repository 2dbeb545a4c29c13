"""Demo bag: a 30 Hz RGB-D camera stream of synthetic people with matching ground truth.

``python -m rtmo_ros.demo_bag OUT_DIR --frames N --seed S [--compressed] [--storage mcap]
[--no-depth]`` writes ``OUT_DIR/bag/`` (rosbag2) and ``OUT_DIR/gt.json`` (COCO keypoints,
``images[i].stamp_ns`` = header stamp of frame i, see :mod:`rtmo_ros.bag_report`).

Default (depth): the scripted scene of ``rtmo_train.data.synthetic.render_depth_sequence``
(people crossing in front of each other at known distances) on three topics with the same
header (stamp, frame_id ``camera_optical``): the colour image, an aligned 16UC1 depth image
[mm] and the CameraInfo; each annotation also carries ``track_id``, ``keypoints_3d`` and
``position_3d`` [m, camera optical frame]. ``--no-depth``: the earlier bag, byte for byte (the
random walkers of ``render_sequence``, colour only). The output depends only on the
arguments: same seed, same pixels, same stamps.
"""
import argparse
import json
import pathlib
import shutil
import sys

import numpy as np
from tqdm import tqdm

from rtmo_ros import bag_io
from rtmo_ros.bag_io import BagError

START_NS = 1_700_000_000 * 1_000_000_000  # fixed first stamp (2023-11-14 22:13:20 UTC)
RATE_HZ = 30.0
FRAME_ID = 'camera_optical'
TOPIC = '/camera/image_raw'
COMPRESSED_TOPIC = '/camera/image_raw/compressed'  # image_transport's naming
DEPTH_TOPIC = '/camera/depth/image_raw'  # 16UC1 [mm], registered to the colour image
INFO_TOPIC = '/camera/camera_info'  # of the colour image (and of the aligned depth)


def frame_stamp(index):
    """Header stamp [ns] of frame ``index``: 1/30 s steps from START_NS, rounded to the ns."""
    return START_NS + round(index * 1e9 / RATE_HZ)


def write_demo_bag(out_dir, frames=150, seed=0, compressed=False, storage='sqlite3',
                   width=640, height=480, force=False, progress=True, depth=True):
    """Write ``out_dir/bag`` and ``out_dir/gt.json``; return (bag path, gt path).

    Images: (height, width) bgr8 ``sensor_msgs/Image`` on ``/camera/image_raw``, or JPEG
    ``CompressedImage`` on ``/camera/image_raw/compressed``; frame_id ``camera_optical``;
    bag receive time = header stamp. With ``depth`` (the default), the depth scene plus
    ``/camera/depth/image_raw`` (16UC1 [mm], 0 = no depth, same size, stamp and frame_id)
    and ``/camera/camera_info`` (K of the pinhole camera, D zeros, plumb_bob) for every frame.
    Without, the random walkers of ``render_sequence`` on the image topic only.
    """
    from rtmo_train.data import synthetic

    if frames < 1:
        raise BagError(f'--frames must be at least 1, got {frames}')
    out_dir = pathlib.Path(out_dir)
    bag_path, gt_path = out_dir / 'bag', out_dir / 'gt.json'
    _clear(bag_path, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    topic, msgtype = (COMPRESSED_TOPIC, bag_io.COMPRESSED) if compressed else (TOPIC, bag_io.IMAGE)
    to_msg = bag_io.bgr_to_compressed_msg if compressed else bag_io.bgr_to_image_msg
    K = synthetic.scene_camera_matrix(width, height)
    if depth:
        sequence = synthetic.render_depth_sequence(seed, frames, width, height)
    else:  # the same (image, persons) pairs, no depth image
        sequence = ((image, None, persons) for image, persons
                    in synthetic.render_sequence(seed, frames, width, height))
    images, annotations = [], []
    with bag_io.BagWriter(bag_path, storage) as writer:
        for index, (image, depth_m, persons) in enumerate(
                tqdm(sequence, total=frames, unit='frame', desc='demo bag',
                     disable=not progress)):
            stamp = frame_stamp(index)
            writer.write(topic, msgtype, stamp, to_msg(image, stamp, FRAME_ID))
            if depth:
                writer.write(DEPTH_TOPIC, bag_io.IMAGE, stamp,
                             bag_io.depth_to_image_msg(depth_m, stamp, FRAME_ID))
                writer.write(INFO_TOPIC, bag_io.CAMERA_INFO, stamp,
                             bag_io.camera_info_msg(K, width, height, stamp, FRAME_ID))
            images.append(gt_image(index, stamp, width, height))
            first_id = len(annotations) + 1
            annotations += [gt_annotation(p, first_id + i, index + 1)
                            for i, p in enumerate(persons)]
    info = {'description': f'rtmo_ros demo bag, seed {seed}, {frames} frames at '
                           f'{RATE_HZ:g} Hz; images[i].stamp_ns = header stamp [ns]'}
    if depth:
        info.update(scene='render_depth_sequence: people crossing at known depths',
                    camera_matrix=K.reshape(-1).tolist(), frame_id=FRAME_ID,
                    topics={'image': topic, 'depth': DEPTH_TOPIC, 'camera_info': INFO_TOPIC})
    gt = {'info': info, 'images': images, 'annotations': annotations,
          'categories': [synthetic.coco_person_category()]}
    gt_path.write_text(json.dumps(gt))
    return bag_path, gt_path


def gt_image(index, stamp, width, height):
    """COCO ``images`` entry of frame ``index``, matched to its message by ``stamp_ns``."""
    sec, nanosec = divmod(stamp, 1_000_000_000)
    return {'id': index + 1, 'file_name': f'{sec}_{nanosec:09d}.png', 'stamp_ns': stamp,
            'frame_index': index, 'width': width, 'height': height}


def gt_annotation(person, ann_id, image_id):
    """COCO keypoint annotation of one rendered person (keeps its ``track_id``).

    A person of the depth scene also gets ``keypoints_3d`` (flat 17 * 3: x, y, z [m] per
    keypoint, camera optical frame, zeros where v = 0) and ``position_3d`` ([x, y, z] m: the
    mean of joints 5, 6, 11, 12), rounded to the micrometre (see ``render_depth_sequence``).
    """
    ann = {'id': ann_id, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
           'keypoints': [round(float(v), 2) for v in person['keypoints'].reshape(-1)],
           'num_keypoints': int(person['num_keypoints']),
           'bbox': [round(float(v), 2) for v in person['bbox']],
           'area': float(person['area']), 'track_id': int(person['track_id'])}
    for key in ('keypoints_3d', 'position_3d'):
        if key in person:
            ann[key] = [round(float(v), 6) for v in np.reshape(person[key], -1)]
    return ann


def _clear(bag_path, force):
    if not bag_path.exists():
        return
    if not force:
        raise BagError(f'{bag_path} exists already; pass --force to replace it or choose '
                       'another OUT_DIR')
    if not (bag_path / 'metadata.yaml').is_file():
        raise BagError(f'{bag_path} exists and is not a rosbag2; remove it by hand')
    shutil.rmtree(bag_path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m rtmo_ros.demo_bag',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='folder for bag/ and gt.json')
    parser.add_argument('--frames', type=int, default=150, help='number of frames (30 Hz)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--compressed', action='store_true',
                        help='JPEG CompressedImage instead of raw bgr8 Image')
    parser.add_argument('--storage', choices=sorted(bag_io.STORAGES), default='sqlite3')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--force', action='store_true', help='replace an existing OUT_DIR/bag')
    parser.add_argument('--no-depth', action='store_true',
                        help='colour only: the earlier random-walker bag, without the depth '
                             'and camera_info topics or 3D ground truth')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    try:
        bag, gt = write_demo_bag(args.out_dir, args.frames, args.seed, args.compressed,
                                 args.storage, args.width, args.height, args.force,
                                 progress=not args.quiet, depth=not args.no_depth)
    except BagError as exc:
        print(f'demo_bag: error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {bag} and {gt}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
