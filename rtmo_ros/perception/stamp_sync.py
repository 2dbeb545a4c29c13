"""Pair each image with the depth image (or camera info) nearest to it in header time.

What message_filters' ApproximateTimeSynchronizer does for two topics, kept ROS-free and
lock-protected so that subscription callbacks add while the node's worker thread looks up:
an image is paired with the buffered item whose stamp is nearest to its own, if that is within
the tolerance (``depth_sync_tolerance_s``), and that item is used up, as the synchronizer
deletes a matched message; otherwise the image has no partner (its 3D stays NaN).
Unlike a synchronizer's callback, the lookup happens when the worker takes the image, after
inference, so a depth image that arrives a little after its colour image is still found.
"""
import collections
import threading


def stamp_ns(header):
    """A message header's stamp in integer nanoseconds (rclpy and rosbags headers alike)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class StampBuffer:
    """The last ``size`` items of one topic by header stamp [ns]."""

    def __init__(self, size=30):
        self._items = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, stamp_ns, item):
        with self._lock:
            self._items.append((int(stamp_ns), item))

    def take(self, stamp_ns, tolerance_ns):
        """Remove and return the item whose stamp is nearest to ``stamp_ns`` within
        ``tolerance_ns``, or None."""
        with self._lock:
            best = min(self._items, key=lambda entry: abs(entry[0] - stamp_ns), default=None)
            if best is None or abs(best[0] - stamp_ns) > tolerance_ns:
                return None
            self._items.remove(best)
        return best[1]

    def latest(self):
        """The newest item added, or None."""
        with self._lock:
            return self._items[-1][1] if self._items else None

    def clear(self):
        with self._lock:
            self._items.clear()
