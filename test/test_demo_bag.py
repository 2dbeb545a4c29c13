"""The demo bag generator: a deterministic 30 Hz camera stream with stamp-matched COCO GT."""
import json

import numpy as np
import pytest

from rtmo_ros import bag_io, demo_bag


def frames_of(bag):
    reader = bag_io.open_bag(bag)
    try:
        topic = bag_io.choose_topic(reader)
        return topic, list(bag_io.read_frames(reader, topic))
    finally:
        reader.close()


def test_camera_like_stream_with_matching_gt(tmp_path):
    bag, gt_path = demo_bag.write_demo_bag(tmp_path, frames=3, seed=5, progress=False)
    topic, frames = frames_of(bag)
    assert topic == '/camera/image_raw'
    stamps = [f.stamp_ns for f in frames]
    assert stamps[0] == demo_bag.START_NS
    assert np.diff(stamps).tolist() == [33333333, 33333334]  # 1/30 s, rounded to the ns
    msg = frames[0].message
    assert (msg.width, msg.height, msg.encoding, msg.header.frame_id) == (
        640, 480, 'bgr8', 'camera_optical')
    assert [f.log_ns for f in frames] == stamps
    gt = json.loads(gt_path.read_text())
    assert [im['stamp_ns'] for im in gt['images']] == stamps
    assert gt['annotations'] and all(len(a['keypoints']) == 51 for a in gt['annotations'])
    assert {a['image_id'] for a in gt['annotations']} <= {im['id'] for im in gt['images']}
    ids = [a['id'] for a in gt['annotations']]
    assert sorted(set(ids)) == ids == list(range(1, len(ids) + 1))


def test_same_seed_same_bag_other_seed_other_bag(tmp_path):
    runs = [demo_bag.write_demo_bag(tmp_path / name, frames=2, seed=seed, width=160,
                                    height=120, progress=False)
            for name, seed in (('a', 7), ('b', 7), ('c', 8))]
    pixels = [[f.decode() for f in frames_of(bag)[1]] for bag, _ in runs]
    gts = [json.loads(gt.read_text())['annotations'] for _, gt in runs]
    assert all(np.array_equal(x, y) for x, y in zip(pixels[0], pixels[1]))
    assert gts[0] == gts[1]
    assert not np.array_equal(pixels[0][0], pixels[2][0])


def test_people_move_enter_and_leave(tmp_path):
    _, gt_path = demo_bag.write_demo_bag(tmp_path, frames=100, seed=0, width=96, height=72,
                                         progress=False)
    gt = json.loads(gt_path.read_text())
    tracks = {}
    for ann in sorted(gt['annotations'], key=lambda a: a['image_id']):
        tracks.setdefault(ann['track_id'], []).append(ann)
    spans = [(t[0]['image_id'], t[-1]['image_id']) for t in tracks.values()]
    assert len(tracks) >= 3                                  # several people
    assert any(first > 1 for first, _ in spans)              # someone enters
    assert any(last < len(gt['images']) for _, last in spans)  # someone leaves
    longest = max(tracks.values(), key=len)
    centre = [a['bbox'][0] + a['bbox'][2] / 2 for a in longest]
    assert abs(centre[-1] - centre[0]) > 5                   # and they move


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_compressed_and_storage_options(tmp_path, storage):
    assert demo_bag.main([str(tmp_path), '--frames', '2', '--seed', '3', '--compressed',
                          '--storage', storage, '--width', '160', '--height', '120',
                          '--quiet']) == 0
    suffix = '.mcap' if storage == 'mcap' else '.db3'
    assert any(p.suffix == suffix for p in (tmp_path / 'bag').iterdir())
    topic, frames = frames_of(tmp_path / 'bag')
    assert topic == '/camera/image_raw/compressed'
    assert frames[0].msgtype == bag_io.COMPRESSED and frames[0].message.format == 'jpeg'
    raw_bag, _ = demo_bag.write_demo_bag(tmp_path / 'raw', frames=2, seed=3, width=160,
                                         height=120, progress=False)
    raw = frames_of(raw_bag)[1][1].decode().astype(int)
    assert np.abs(frames[1].decode().astype(int) - raw).mean() < 4  # JPEG q90 of the same


def test_existing_output_needs_force(tmp_path, capsys):
    args = [str(tmp_path), '--frames', '1', '--width', '64', '--height', '48', '--quiet']
    assert demo_bag.main(args) == 0
    capsys.readouterr()
    assert demo_bag.main(args) == 2
    err = capsys.readouterr().err
    assert 'exists already' in err and '--force' in err and err.count('\n') == 1
    assert demo_bag.main(args + ['--force']) == 0
