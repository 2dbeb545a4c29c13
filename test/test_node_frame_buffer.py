"""The newest-frame-only handoff: replaced frames are dropped and counted, close wakes takers."""
import threading
import time

from rtmo_ros.frame_buffer import LatestFrame


def test_put_replaces_the_untaken_frame_and_counts_the_drop():
    buf = LatestFrame()
    assert buf.put(1) is False
    assert buf.put(2) is True and buf.put(3) is True
    assert buf.take(timeout=0) == 3
    assert buf.take(timeout=0.01) is None
    assert (buf.received, buf.dropped) == (3, 2)


def test_close_wakes_a_waiting_take_and_refuses_new_frames():
    buf = LatestFrame()
    got = []
    worker = threading.Thread(target=lambda: got.append(buf.take()))
    worker.start()
    time.sleep(0.05)
    buf.close()
    worker.join(timeout=1.0)
    assert not worker.is_alive() and got == [None]
    assert buf.put(4) is False and buf.take(timeout=0) is None
    buf.reopen()
    buf.put(5)
    assert buf.take(timeout=0) == 5


def test_a_slow_consumer_sees_only_the_newest_frames():
    buf = LatestFrame()
    seen = []

    def consume():
        while (item := buf.take()) is not None:
            seen.append(item)
            time.sleep(0.02)  # slower than the producer

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(50):
        buf.put(i)
        time.sleep(0.002)
    time.sleep(0.1)
    buf.close()
    worker.join(timeout=1.0)
    assert seen[-1] == 49 and seen == sorted(seen)
    assert len(seen) + buf.dropped == 50 and buf.dropped > 25


def test_each_camera_keeps_its_newest_frame_and_all_are_taken_together():
    buf = LatestFrame()
    assert buf.put('a1', 'cam0') is False and buf.put('b1', 'cam1') is False
    assert buf.put('a2', 'cam0') is True  # only cam0's untaken frame is a drop
    assert buf.take_all(timeout=0) == {'cam0': 'a2', 'cam1': 'b1'}
    assert buf.take_all(timeout=0.01) == {}
    assert (buf.received, buf.dropped) == (3, 1)
