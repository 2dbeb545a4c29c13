"""Image <-> depth pairing by stamp agrees with message_filters' ApproximateTimeSynchronizer.

message_filters (Python API, built from ../shared/ros-sources by make setup) is what a ROS user
would reach for; the node pairs inside its worker instead (StampBuffer), so this pins that both
pick the same depth image for every colour image of a jittery stream with gaps.
"""
import importlib.util

import numpy as np
import pytest

from rtmo_ros.perception.stamp_sync import StampBuffer

TOL_S = 0.02


def stream(seed=0, frames=200):
    """Colour and depth stamps [ns] of a 30 Hz camera: depth jitters by up to 25 ms, some lost."""
    rng = np.random.default_rng(seed)
    images = np.round(np.arange(frames) * 1e9 / 30).astype(np.int64) + 10**12
    depths = images + rng.integers(-25_000_000, 25_000_000, frames)
    keep = rng.uniform(size=frames) > 0.1
    return images, depths[keep]


def arrivals(images, depths):
    """('depth' | 'image', stamp) in the order a camera publishes them: each depth image no
    later than the colour image it may pair with."""
    depth_iter = iter(depths)
    pending = next(depth_iter, None)
    for i in images:
        while pending is not None and pending <= i + TOL_S * 1e9:
            yield 'depth', int(pending)
            pending = next(depth_iter, None)
        yield 'image', int(i)


def ours(images, depths):
    """The node's pairing: it looks up an image's depth after inference, i.e. later than the
    image arrived; here, when the next image arrives (a depth image published a little after
    its colour image is still found, as the synchronizer's callback would find it)."""
    buffer, pairs, waiting = StampBuffer(30), {}, None
    for kind, stamp in arrivals(images, depths):
        if kind == 'depth':
            buffer.add(stamp, stamp)
            continue
        if waiting is not None:
            pairs[waiting] = buffer.take(waiting, int(TOL_S * 1e9))
        waiting = stamp
    pairs[waiting] = buffer.take(waiting, int(TOL_S * 1e9))
    return pairs


def test_pairs_the_nearest_within_the_tolerance_once_and_nothing_else():
    buffer = StampBuffer(3)
    for stamp in (100, 200, 300, 400):  # 100 falls out of the 3-item buffer
        buffer.add(stamp, f'd{stamp}')
    assert buffer.take(290, 20) == 'd300' and buffer.take(250, 20) is None
    assert buffer.take(110, 50) is None and buffer.latest() == 'd400'
    assert buffer.take(300, 20) is None, 'a depth image pairs with one image only'


@pytest.mark.skipif(importlib.util.find_spec('message_filters') is None,
                    reason='message_filters is not installed (make setup builds it from '
                           '../shared/ros-sources)')
def test_the_same_pairs_as_message_filters_approximate_time_synchronizer():
    import message_filters
    from std_msgs.msg import Header

    images, depths = stream()
    colour, depth = message_filters.SimpleFilter(), message_filters.SimpleFilter()
    sync = message_filters.ApproximateTimeSynchronizer([colour, depth], 30, TOL_S)
    theirs = {}
    sync.registerCallback(lambda c, d: theirs.setdefault(stamp_of(c), stamp_of(d)))

    def msg(ns):
        header = Header()
        header.stamp.sec, header.stamp.nanosec = divmod(int(ns), 10**9)
        return type('Stamped', (), {'header': header})()

    for kind, stamp in arrivals(images, depths):
        (depth if kind == 'depth' else colour).signalMessage(msg(stamp))
    mine = ours(images, depths)
    assert theirs, 'the synchronizer paired nothing'
    agree = [i for i in theirs if mine[i] == theirs[i]]
    assert len(agree) == len(theirs), {i: (mine[i], theirs[i]) for i in theirs
                                       if mine[i] != theirs[i]}
    # where it found no partner, neither did we
    unpaired = [i for i in mine if i not in theirs]
    assert all(mine[i] is None for i in unpaired), unpaired


def stamp_of(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
