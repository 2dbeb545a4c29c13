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
