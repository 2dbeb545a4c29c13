"""Newest-frame-only handoff between subscription callbacks and a worker thread.

The camera may deliver frames faster than the model runs. Queuing them would make latency grow
without bound, so the buffer holds one frame per camera (``key``): a new frame replaces one the
worker has not taken yet, and the replaced frame is counted as dropped. The worker takes the
newest frame of every camera that has one at once (:meth:`LatestFrame.take_all`), so several
cameras share one engine call.
"""
import threading


class LatestFrame:
    """A mailbox with one slot per key: :meth:`put` never blocks, :meth:`take` /
    :meth:`take_all` wait for the newest items."""

    def __init__(self):
        self._cond = threading.Condition()
        self._items = {}
        self._closed = False
        self.received = 0   # items offered with put()
        self.dropped = 0    # items replaced before the worker took them

    def put(self, item, key=''):
        """Offer ``item`` for camera ``key``; return True when it replaced an item of that
        camera nobody had taken (a drop). Items offered after :meth:`close` are ignored."""
        with self._cond:
            if self._closed:
                return False
            replaced = key in self._items
            self._items[key] = item
            self.received += 1
            self.dropped += replaced
            self._cond.notify()
        return replaced

    def take_all(self, timeout=None):
        """Return {key: newest item} of every camera with one and empty the slots; {} on
        timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            items, self._items = self._items, {}
            return {} if self._closed else items

    def take(self, timeout=None):
        """Return the newest item of a single-camera buffer; None on timeout or once closed."""
        items = self.take_all(timeout)
        return next(iter(items.values()), None)

    def close(self):
        """Wake every waiting take (which then returns nothing) and refuse further items."""
        with self._cond:
            self._closed = True
            self._items = {}
            self._cond.notify_all()

    def reopen(self):
        """Accept items again after :meth:`close` (counters keep running)."""
        with self._cond:
            self._closed = False

    @property
    def closed(self):
        return self._closed
