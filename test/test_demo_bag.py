"""The demo bag generator: a deterministic 30 Hz RGB-D stream with stamp-matched COCO GT."""
import dataclasses
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
    raw = frames_of(raw_bag)[1][1].decode()
    jpeg = bag_io.bgr_to_compressed_msg(raw, 0, 'camera_optical').data
    np.testing.assert_array_equal(frames[1].message.data, jpeg)  # JPEG q90 of the same image


def test_existing_output_needs_force(tmp_path, capsys):
    args = [str(tmp_path), '--frames', '1', '--width', '64', '--height', '48', '--quiet']
    assert demo_bag.main(args) == 0
    capsys.readouterr()
    assert demo_bag.main(args) == 2
    err = capsys.readouterr().err
    assert 'exists already' in err and '--force' in err and err.count('\n') == 1
    assert demo_bag.main(args + ['--force']) == 0


# -- depth and camera info -----------------------------------------------------------------------
@pytest.fixture(scope='module')
def rgbd(tmp_path_factory):
    """A 45-frame depth demo bag (160x120, seed 3): walkers 0 and 1 cross at about frame 37,
    walker 2 enters at about frame 40."""
    out = tmp_path_factory.mktemp('rgbd')
    bag, gt = demo_bag.write_demo_bag(out, frames=45, seed=3, width=160, height=120,
                                      progress=False)
    reader = bag_io.open_bag(bag)
    try:
        synced = list(bag_io.read_synced(reader, demo_bag.TOPIC, demo_bag.DEPTH_TOPIC,
                                         demo_bag.INFO_TOPIC))
        topics = {c.topic: c.msgtype for c in reader.connections}
        chosen = bag_io.choose_topic(reader)
    finally:
        reader.close()
    return {'synced': synced, 'topics': topics, 'chosen': chosen,
            'gt': json.loads(gt.read_text())}


def test_depth_bag_has_aligned_depth_and_camera_info_on_every_stamp(rgbd):
    from rtmo_train.data.synthetic import render_depth_sequence, scene_camera_matrix

    assert rgbd['topics'] == {'/camera/image_raw': bag_io.IMAGE,
                              '/camera/depth/image_raw': bag_io.IMAGE,
                              '/camera/camera_info': bag_io.CAMERA_INFO}
    assert rgbd['chosen'] == '/camera/image_raw'  # the colour topic, without --topic
    synced = rgbd['synced']
    assert [s.frame.stamp_ns for s in synced] == [demo_bag.frame_stamp(i) for i in range(45)]
    rendered = render_depth_sequence(3, 45, 160, 120)
    K = scene_camera_matrix(160, 120)
    for s, (_, depth_m, _) in zip(synced, rendered):
        assert s.depth_stamp_ns == s.info_stamp_ns == s.frame.stamp_ns and s.depth_error is None
        assert s.depth_encoding == '16UC1' and s.depth_m.dtype == np.float32
        assert s.depth_m.shape == s.frame.decode().shape[:2] == (120, 160)
        assert np.abs(s.depth_m - depth_m).max() <= 0.0005
        info = s.camera_info
        assert info.header.frame_id == s.frame.frame_id == 'camera_optical'
        assert (info.width, info.height, info.distortion_model) == (160, 120, 'plumb_bob')
        np.testing.assert_array_equal(bag_io.camera_matrix(info), K)
        np.testing.assert_array_equal(info.d, np.zeros(5))
        np.testing.assert_array_equal(np.asarray(info.p).reshape(3, 4)[:, :3], K)
    assert set(np.unique(synced[0].depth_m).tolist()) >= {2.5, 4.0, 6.0}  # walkers 0, 1, wall


def test_gt_has_tracks_and_3d_keypoints_that_project_onto_the_2d_ones(rgbd):
    gt = rgbd['gt']
    K = np.asarray(gt['info']['camera_matrix']).reshape(3, 3)
    np.testing.assert_array_equal(K, bag_io.camera_matrix(rgbd['synced'][0].camera_info))
    assert gt['info']['topics']['depth'] == '/camera/depth/image_raw'
    depth = {s.frame.stamp_ns: s.depth_m for s in rgbd['synced']}
    stamps = {im['id']: im['stamp_ns'] for im in gt['images']}
    assert {a['track_id'] for a in gt['annotations']} == {0, 1, 2}
    for ann in gt['annotations']:
        k = np.asarray(ann['keypoints']).reshape(17, 3)
        k3 = np.asarray(ann['keypoints_3d']).reshape(17, 3)
        labelled = k[:, 2] > 0
        projected = K[:2, :2] @ (k3[labelled, :2] / k3[labelled, 2:]).T + K[:2, 2:]
        np.testing.assert_allclose(projected.T, k[labelled, :2], atol=1e-3)  # pinhole, px
        assert (k3[~labelled] == 0).all()
        if labelled[[5, 6, 11, 12]].all():
            np.testing.assert_allclose(ann['position_3d'], k3[[5, 6, 11, 12]].mean(axis=0),
                                       atol=2e-6)  # both rounded to the micrometre
        seen = k[:, 2] == 2  # a visible keypoint: the depth image shows the person's z there
        d = depth[stamps[ann['image_id']]]
        z = d[np.round(k[seen, 1]).astype(int), np.round(k[seen, 0]).astype(int)]
        np.testing.assert_allclose(z, ann['position_3d'][2], atol=0.0005)


def test_no_depth_is_the_previous_colour_only_bag(tmp_path):
    assert demo_bag.main([str(tmp_path), '--frames', '2', '--width', '64', '--height', '48',
                          '--no-depth', '--quiet']) == 0
    reader = bag_io.open_bag(tmp_path / 'bag')
    assert [c.topic for c in reader.connections] == ['/camera/image_raw']
    reader.close()
    gt = json.loads((tmp_path / 'gt.json').read_text())
    assert gt['annotations'] and not any('keypoints_3d' in a for a in gt['annotations'])
    assert 'camera_matrix' not in gt['info']


def depth_msg_32f(depth, ns, bigendian=False, pad=0):
    """A 32FC1 Image with ``pad`` bytes of padding per row."""
    dtype = np.dtype('>f4' if bigendian else '<f4')
    rows = np.zeros((depth.shape[0], depth.shape[1] * 4 + pad), np.uint8)
    rows[:, :depth.shape[1] * 4] = depth.astype(dtype).view(np.uint8)
    msg = bag_io.depth_to_image_msg(np.ones_like(depth), ns, 'cam')
    return dataclasses.replace(msg, encoding='32FC1', is_bigendian=int(bigendian),
                               step=rows.shape[1], data=rows.reshape(-1))


def test_depth_messages_decode_to_metres():
    """Written as 16UC1 millimetres; read back by the node's decoding (image_conversion)."""
    depth = np.array([[0.0, 1.2344, np.nan], [70.0, -1.0, 2.0]], np.float32)
    msg = bag_io.depth_to_image_msg(depth, 5, 'cam')
    assert msg.encoding == '16UC1'
    assert np.frombuffer(msg.data, '<u2').tolist() == [0, 1234, 0, 0, 0, 2000]
    metres = bag_io.depth_image_to_metres(msg)
    np.testing.assert_allclose(metres, [[np.nan, 1.234, np.nan], [np.nan, np.nan, 2.0]])
    for bigendian, pad in ((False, 0), (True, 4)):
        metres = bag_io.depth_image_to_metres(depth_msg_32f(depth, 5, bigendian, pad))
        assert metres.dtype == np.float32
        np.testing.assert_array_equal(metres, np.where(depth > 0, depth, np.nan))
    with pytest.raises(bag_io.ImageError, match='stamp 5 ns.*mono8.*16UC1, 32FC1'):
        bag_io.depth_image_to_metres(dataclasses.replace(msg, encoding='mono8'))
    with pytest.raises(bag_io.ImageError, match='truncated'):
        bag_io.depth_image_to_metres(dataclasses.replace(msg, data=msg.data[:-1]))


def test_read_synced_matches_nearest_stamp_within_tolerance(tmp_path):
    ms = 1_000_000
    image = np.zeros((2, 3, 3), np.uint8)
    depth = np.full((2, 3), 1.5)
    K = np.array([[2.0, 0, 1], [0, 2, 0.5], [0, 0, 1]])
    with bag_io.BagWriter(tmp_path / 'bag', 'mcap') as writer:
        for i, stamp in enumerate(range(0, 500 * ms, 100 * ms)):
            writer.write('/c/image', bag_io.IMAGE, stamp,
                         bag_io.bgr_to_image_msg(image, stamp, 'c'))
            if i != 2:  # frame 2 has no depth, frame 3's is 4 ms late, frame 4's unreadable
                d = bag_io.depth_to_image_msg(depth * (i + 1), stamp + 4 * ms * (i == 3), 'c')
                if i == 4:
                    d = dataclasses.replace(d, encoding='rgb8')
                writer.write('/c/depth/image', bag_io.IMAGE, stamp + 5 * ms, d)
            if i < 2:  # camera info only for the first two
                writer.write('/c/info', bag_io.CAMERA_INFO, stamp,
                             bag_io.camera_info_msg(K, 3, 2, stamp, 'c'))
    reader = bag_io.open_bag(tmp_path / 'bag')
    try:
        assert bag_io.choose_topic(reader) == '/c/image'  # the depth topic is not a candidate
        near = list(bag_io.read_synced(reader, '/c/image', '/c/depth/image', '/c/info'))
        exact = list(bag_io.read_synced(reader, '/c/image', '/c/depth/image', tolerance_ns=0))
        with pytest.raises(bag_io.BagError, match='no topic /c/nope'):
            next(bag_io.read_synced(reader, '/c/image', '/c/nope'))
    finally:
        reader.close()
    assert [s.frame.index for s in near] == [0, 1, 2, 3, 4]
    assert [None if s.depth_m is None else float(s.depth_m[0, 0]) for s in near] == [
        1.5, 3.0, None, 6.0, None]
    assert near[3].depth_stamp_ns == 304 * ms and near[2].depth_stamp_ns is None
    assert near[4].depth_error and 'rgb8' in near[4].depth_error
    assert [s.info_stamp_ns for s in near] == [0, 100 * ms, None, None, None]
    np.testing.assert_array_equal(bag_io.camera_matrix(near[1].camera_info), K)
    assert [s.depth_m is not None for s in exact] == [True, True, False, False, False]
    assert all(s.camera_info is None for s in exact)


def test_metrics_on_the_demo_gt(rgbd):
    """The GT as its own prediction is perfect; lifting each keypoint with the depth image at
    its pixel is exact where the person shows and wrong where a nearer one covers it (v = 1)."""
    from rtmo_ros import track_metrics

    gt = track_metrics.gt_frames_from_coco(rgbd['gt'])
    boxes = track_metrics.track_boxes(gt)
    scores = track_metrics.tracking_metrics(boxes, boxes)
    assert (scores['hota'], scores['idf1'], scores['mota'], scores['id_switches']) == (1, 1, 1, 0)
    assert track_metrics.keypoint3d_metrics(gt, gt)['kpt3d_err_p90_m'] == 0
    K = bag_io.camera_matrix(rgbd['synced'][0].camera_info)
    lifted = []
    for frame, synced in zip(gt, rgbd['synced']):
        depth = synced.depth_m
        people = []
        for person in frame:
            xy = person['keypoints_2d']
            z = depth[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
            xyz = np.stack([(xy[:, 0] - K[0, 2]) * z / K[0, 0],
                            (xy[:, 1] - K[1, 2]) * z / K[1, 1], z], axis=1)
            people.append({'box': person['box'], 'keypoints_3d': xyz})
        lifted.append(people)
    m = track_metrics.keypoint3d_metrics(gt, lifted)
    assert m['kpt3d_valid_fraction'] == 1.0 and m['kpt3d_err_median_m'] < 0.001
    assert m['kpt3d_err_p90_m'] < 0.001 < m['kpt3d_err_mean_m']  # the v = 1 ones are off
    assert m['position_err_median_m'] < 0.001
