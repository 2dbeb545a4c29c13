"""Newest-frame-only handoff between a subscription callback and a worker thread.

The camera may deliver frames faster than the model runs. Queuing them would make latency grow
without bound, so the buffer holds one frame: a new frame replaces one the worker has not taken
yet, and the replaced frame is counted as dropped.
"""
import threading


class LatestFrame:
    """A one-slot mailbox: :meth:`put` never blocks, :meth:`take` waits for the newest item."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item = None
        self._closed = False
        self.received = 0   # items offered with put()
        self.dropped = 0    # items replaced before the worker took them

    def put(self, item):
        """Offer ``item``; return True when it replaced an item nobody had taken (a drop).

        Items offered after :meth:`close` are ignored (not counted).
        """
        with self._cond:
            if self._closed:
                return False
            replaced = self._item is not None
            self._item = item
            self.received += 1
            self.dropped += replaced
            self._cond.notify()
        return replaced

    def take(self, timeout=None):
        """Return the newest item and empty the slot; None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self):
        """Wake every waiting :meth:`take` (which then returns None) and refuse further items."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    def reopen(self):
        """Accept items again after :meth:`close` (counters keep running)."""
        with self._cond:
            self._closed = False

    @property
    def closed(self):
        return self._closed
