"""rosbag2 reading/writing with rosbags: both storages, raw and compressed, clear errors."""
import dataclasses

import cv2
import numpy as np
import pytest

from rtmo_ros import bag_io
from rtmo_ros.bag_io import BagError
from rtmo_ros.engine.poses import Poses
from rtmo_ros.image_conversion import ImageError

STAMP = 1_700_000_123 * 10**9 + 456


def some_poses(n=2, k=17):
    rng = np.random.default_rng(n)
    boxes = np.sort(rng.uniform(0, 300, (n, 4)).astype(np.float32), axis=1)
    return Poses(boxes, np.linspace(0.9, 0.5, n).astype(np.float32),
                 rng.uniform(0, 300, (n, k, 2)).astype(np.float32),
                 rng.uniform(0, 1, (n, k)).astype(np.float32))


def write_image_bag(path, storage, images, compressed=False, topic='/cam/image'):
    to_msg = bag_io.bgr_to_compressed_msg if compressed else bag_io.bgr_to_image_msg
    msgtype = bag_io.COMPRESSED if compressed else bag_io.IMAGE
    with bag_io.BagWriter(path, storage) as writer:
        for i, image in enumerate(images):
            writer.write(topic, msgtype, 1000 + i, to_msg(image, STAMP + i, 'cam'))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('compressed', [False, True])
def test_images_round_trip(tmp_path, storage, compressed):
    rng = np.random.default_rng(0)
    images = [cv_smooth(rng) for _ in range(3)]
    write_image_bag(tmp_path / 'bag', storage, images, compressed)
    reader = bag_io.open_bag(tmp_path / 'bag')
    topic = bag_io.choose_topic(reader)
    frames = list(bag_io.read_frames(reader, topic))
    assert bag_io.read_stamps(reader, topic) == [STAMP, STAMP + 1, STAMP + 2]
    reader.close()
    assert [(f.stamp_ns, f.log_ns, f.frame_id) for f in frames] == [
        (STAMP + i, 1000 + i, 'cam') for i in range(3)]
    for frame, image in zip(frames, images):
        decoded = frame.decode()
        assert decoded.shape == image.shape and decoded.dtype == np.uint8
        err = np.abs(decoded.astype(int) - image).mean()
        assert err < 3 if compressed else err == 0


def cv_smooth(rng, width=64, height=48):
    """A smooth random (height, width, 3) BGR image (JPEG keeps it close)."""
    small = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_person_arrays_round_trip_and_match_rclpy(tmp_path, storage):
    poses = [some_poses(2), Poses.empty(17), some_poses(1)]
    store = bag_io.typestore()
    raws = []
    with bag_io.BagWriter(tmp_path / 'poses', storage) as writer:
        for i, p in enumerate(poses):
            msg = bag_io.poses_to_person_array(p, STAMP + i, 'cam', 'coco17')
            raws.append(store.serialize_cdr(msg, bag_io.PERSON_ARRAY))
            writer.write_raw('/poses', bag_io.PERSON_ARRAY, 10 + i, raws[-1])
    back = bag_io.read_person_arrays(tmp_path / 'poses')
    assert [t for t, _ in back] == [10, 11, 12]
    for i, ((_, msg), p) in enumerate(zip(back, poses)):
        assert bag_io.stamp_ns(msg.header) == STAMP + i == bag_io.cdr_stamp(raws[i])
        got = bag_io.person_array_to_poses(msg, 17)
        for name in ('boxes', 'scores', 'keypoints', 'keypoint_scores'):
            np.testing.assert_allclose(getattr(got, name), getattr(p, name), rtol=1e-6)
    # the .msg-registered types serialize exactly as the real rtmo_msgs package does
    serialization = pytest.importorskip('rclpy.serialization')
    from rtmo_msgs.msg import PersonArray
    msg = serialization.deserialize_message(bytes(raws[0]), PersonArray)
    assert msg.header.frame_id == 'cam' and msg.skeleton == 'coco17'
    assert len(msg.persons) == 2 and len(msg.persons[0].keypoints) == 17
    assert msg.persons[1].keypoints[3].x == pytest.approx(float(poses[0].keypoints[1, 3, 0]))
    assert msg.persons[0].track_id == -1 and np.isnan(msg.persons[0].keypoints_3d[0].z)


@pytest.mark.parametrize('name,content', [('garbage.db3', b'not a bag' * 50),
                                          ('garbage.mcap', b'not a bag' * 50),
                                          ('garbage.bin', b'x'), ('empty_dir', None),
                                          ('missing', 'absent')])
def test_unreadable_bags_give_one_clear_sentence(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(BagError) as info:
        bag_io.open_bag(path)
    text = str(info.value)
    assert str(path) in text and 'rosbag2' in text and '\n' not in text


def test_topic_choice(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    write_image_bag(tmp_path / 'one', 'sqlite3', [image], topic='/a/image')
    with bag_io.BagWriter(tmp_path / 'two', 'mcap') as writer:
        writer.write('/a/image', bag_io.IMAGE, 1, bag_io.bgr_to_image_msg(image, 1, 'cam'))
        writer.write('/b/image/compressed', bag_io.COMPRESSED, 1,
                     bag_io.bgr_to_compressed_msg(image, 1, 'cam'))
    with bag_io.BagWriter(tmp_path / 'none', 'sqlite3') as writer:
        writer.write('/poses', bag_io.PERSON_ARRAY, 1,
                     bag_io.poses_to_person_array(Poses.empty(17), 1, 'cam', 'coco17'))
    reader = bag_io.open_bag(tmp_path / 'one')
    assert bag_io.choose_topic(reader) == '/a/image'
    with pytest.raises(BagError, match=r'topic /nope is not an image topic.*/a/image \(Image\)'):
        bag_io.choose_topic(reader, '/nope')
    reader.close()
    reader = bag_io.open_bag(tmp_path / 'two')
    with pytest.raises(BagError, match=r'several image topics.*/a/image \(Image\), '
                                       r'/b/image/compressed \(CompressedImage\).*--topic'):
        bag_io.choose_topic(reader)
    assert bag_io.choose_topic(reader, '/b/image/compressed') == '/b/image/compressed'
    reader.close()
    reader = bag_io.open_bag(tmp_path / 'none')
    with pytest.raises(BagError, match='has no image topic'):
        bag_io.choose_topic(reader)
    reader.close()


def test_undecodable_images_raise_the_nodes_image_error(tmp_path):
    """Bad encoding, garbage JPEG, corrupt CDR: ImageError (what the node skips), not BagError.

    read_raw gives the same indices and stamps as read_frames without deserializing.
    """
    image = cv_smooth(np.random.default_rng(1))
    good = bag_io.bgr_to_image_msg(image, STAMP, 'cam')
    bad_encoding = dataclasses.replace(good, header=bag_io.make_header(STAMP + 1, 'cam'),
                                       encoding='bogus16')
    garbage = dataclasses.replace(bag_io.bgr_to_compressed_msg(image, STAMP + 2, 'cam'),
                                  data=np.frombuffer(b'not a jpeg', np.uint8))
    corrupt = bag_io.typestore().serialize_cdr(
        bag_io.bgr_to_image_msg(image, STAMP + 3, 'cam'), bag_io.IMAGE)[:40]
    with bag_io.BagWriter(tmp_path / 'bag', 'sqlite3') as writer:
        writer.write('/raw', bag_io.IMAGE, 1, good)
        writer.write('/raw', bag_io.IMAGE, 2, bad_encoding)
        writer.write('/raw', bag_io.IMAGE, 3, good)
        writer.write_raw('/raw', bag_io.IMAGE, 4, corrupt)
        writer.write('/jpeg', bag_io.COMPRESSED, 5, garbage)
    reader = bag_io.open_bag(tmp_path / 'bag')
    frames = list(bag_io.read_frames(reader, '/raw'))
    raw = list(bag_io.read_raw(reader, '/raw'))
    jpeg = next(bag_io.read_frames(reader, '/jpeg'))
    reader.close()
    assert [f.index for f in frames] == [i for i, _, _, _ in raw] == [0, 1, 2, 3]
    assert [f.stamp_ns for f in frames] == [s for _, _, s, _ in raw] == [
        STAMP, STAMP + 1, STAMP, STAMP + 3]
    assert [f.rawdata for f in frames] == [r for _, _, _, r in raw]
    assert frames[0].decode().shape == image.shape and frames[3].message is None
    for frame, words in ((frames[1], 'bogus16'), (jpeg, None),
                         (frames[3], 'corrupt')):
        with pytest.raises(ImageError, match=words) as info:
            frame.decode()
        assert str(frame.stamp_ns) in str(info.value)


def some_tracked(poses, seed=0):
    """A Tracked for ``poses``: ids, shifted keypoints, 3D with a NaN joint, position, velocity."""
    from rtmo_ros.perception import Tracked

    rng = np.random.default_rng(seed)
    n, k = poses.keypoints.shape[:2]
    kpts_3d = rng.uniform(-1, 3, (n, k, 3))
    kpts_3d[:, 4] = np.nan
    position = rng.uniform(-1, 3, (n, 3))
    velocity = np.full((n, 3), np.nan)
    velocity[1:] = rng.uniform(-1, 1, (n - 1, 3))
    return Tracked(np.arange(7, 7 + n), (poses.keypoints + 0.5).astype(np.float32), kpts_3d,
                   position, velocity, False)


def test_person_arrays_carry_tracks_3d_position_and_velocity():
    """With a Tracked: its ids, (smoothed) keypoints, 3D, position and velocity, NaN kept;
    without: track_id -1, the raw keypoints, NaN everywhere (the node with both off)."""
    poses = some_poses(3)
    tracked = some_tracked(poses)
    store = bag_io.typestore()
    raw = store.serialize_cdr(bag_io.poses_to_person_array(poses, STAMP, 'cam', 'coco17', tracked),
                              bag_io.PERSON_ARRAY)
    back = bag_io.person_array_to_tracked(store.deserialize_cdr(raw, bag_io.PERSON_ARRAY), 17)
    np.testing.assert_array_equal(back.track_ids, [7, 8, 9])
    np.testing.assert_allclose(back.keypoints, tracked.keypoints, rtol=1e-6)
    for name in ('keypoints_3d', 'position', 'velocity'):  # float64 on the wire: exact
        np.testing.assert_array_equal(getattr(back, name), getattr(tracked, name))
    plain = bag_io.poses_to_person_array(poses, STAMP, 'cam', 'coco17')
    untracked = bag_io.person_array_to_tracked(plain, 17)
    assert (untracked.track_ids == -1).all()
    np.testing.assert_allclose(untracked.keypoints, poses.keypoints, rtol=1e-6)
    assert np.isnan(untracked.keypoints_3d).all() and np.isnan(untracked.position).all()
    assert np.isnan(untracked.velocity).all()
    empty = bag_io.person_array_to_tracked(
        bag_io.poses_to_person_array(Poses.empty(17), STAMP, 'cam', 'coco17'), 17)
    assert len(empty) == 0 and empty.keypoints_3d.shape == (0, 17, 3)
    # the real rtmo_msgs package reads the same bytes
    serialization = pytest.importorskip('rclpy.serialization')
    from rtmo_msgs.msg import PersonArray
    msg = serialization.deserialize_message(bytes(raw), PersonArray)
    person = msg.persons[1]
    assert person.track_id == 8 and person.keypoints[0].x == pytest.approx(
        float(tracked.keypoints[1, 0, 0]))
    assert (person.position.x, person.velocity.z) == (tracked.position[1, 0],
                                                      tracked.velocity[1, 2])
    assert np.isnan(msg.persons[0].velocity.x) and np.isnan(person.keypoints_3d[4].z)


def test_read_synced_decodes_depth_as_the_node_does(tmp_path):
    """depth_m is image_conversion.depth_to_metres of the message; decode=False keeps the bytes
    (republished online) and decodes nothing."""
    from rtmo_ros import image_conversion

    depth = np.array([[0.0, 1.2344, np.nan], [70.0, -1.0, 2.0]])
    image = np.zeros((2, 3, 3), np.uint8)
    K = np.array([[2.0, 0, 1], [0, 2, 0.5], [0, 0, 1]])
    depth_msg = bag_io.depth_to_image_msg(depth, STAMP, 'cam')
    with bag_io.BagWriter(tmp_path / 'bag', 'sqlite3') as writer:
        writer.write('/c/image', bag_io.IMAGE, 1, bag_io.bgr_to_image_msg(image, STAMP, 'cam'))
        writer.write('/c/depth', bag_io.IMAGE, 2, depth_msg)
        writer.write('/c/info', bag_io.CAMERA_INFO, 3,
                     bag_io.camera_info_msg(K, 3, 2, STAMP, 'cam'))
    reader = bag_io.open_bag(tmp_path / 'bag')
    try:
        decoded, = bag_io.read_synced(reader, '/c/image', '/c/depth', '/c/info')
        raw, = bag_io.read_synced(reader, '/c/image', '/c/depth', '/c/info', decode=False)
        capped, = bag_io.read_synced(reader, '/c/image', '/c/depth', max_pixels=5)
    finally:
        reader.close()
    expected = image_conversion.depth_to_metres(depth_msg)
    np.testing.assert_array_equal(decoded.depth_m, expected)
    np.testing.assert_allclose(expected, [[np.nan, 1.234, np.nan], [np.nan, np.nan, 2.0]])
    assert (decoded.depth_encoding, decoded.depth_frame_id) == ('16UC1', 'cam')
    store = bag_io.typestore()
    assert raw.depth_m is None and raw.depth_error is None
    assert store.deserialize_cdr(raw.depth_raw, bag_io.IMAGE).encoding == '16UC1'
    assert bag_io.cdr_stamp(raw.info_raw) == STAMP == raw.depth_stamp_ns
    assert capped.depth_m is None and str(STAMP) in capped.depth_error


def test_read_synced_pairs_a_depth_image_with_one_colour_image(tmp_path):
    """As the node (and message_filters): a matched depth message is used up."""
    ms = 1_000_000
    image, depth = np.zeros((2, 3, 3), np.uint8), np.full((2, 3), 1.5)
    with bag_io.BagWriter(tmp_path / 'bag', 'sqlite3') as writer:
        for stamp in (0, 30 * ms):  # one depth image at 15 ms, within 20 ms of both
            writer.write('/c/image', bag_io.IMAGE, stamp,
                         bag_io.bgr_to_image_msg(image, stamp, 'c'))
        writer.write('/c/depth', bag_io.IMAGE, 40 * ms,
                     bag_io.depth_to_image_msg(depth, 15 * ms, 'c'))
    reader = bag_io.open_bag(tmp_path / 'bag')
    try:
        synced = list(bag_io.read_synced(reader, '/c/image', '/c/depth'))
    finally:
        reader.close()
    assert [s.depth_stamp_ns for s in synced] == [15 * ms, None]
