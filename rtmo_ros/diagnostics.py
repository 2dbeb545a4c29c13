"""Pipeline statistics of the pose node and their diagnostic_msgs form.

The worker thread records each processed frame's stage times; the node's ~1 Hz timer takes a
:class:`Window` (means and counts since the previous one) and publishes it with
:func:`diagnostic_status` on ``/diagnostics``.
"""
from dataclasses import dataclass, field
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

# Stage names in pipeline order, all in milliseconds: wait = image received -> worker starts
# it (newest-frame queue), convert = Image -> BGR, preprocess/inference/postprocess = the
# engine's own timings, publish = Poses -> messages -> published, total = received -> poses out.
STAGES = ('wait', 'convert', 'preprocess', 'inference', 'postprocess', 'publish', 'total')


@dataclass
class Window:
    """What happened since the previous window: counts, rates [Hz] and mean stage times [ms]."""

    seconds: float
    received: int
    dropped: int
    processed: int
    invalid: int
    failed: int
    mean_ms: dict = field(default_factory=dict)

    @property
    def input_rate(self):
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def output_rate(self):
        return self.processed / self.seconds if self.seconds > 0 else 0.0


class PipelineStats:
    """Thread-safe totals and per-window stage-time sums of the node's pipeline."""

    def __init__(self):
        self._lock = threading.Lock()
        self.totals = {'received': 0, 'dropped': 0, 'processed': 0, 'invalid': 0, 'failed': 0}
        self._last = dict(self.totals)
        self._sums = dict.fromkeys(STAGES, 0.0)
        self._since = time.monotonic()

    def count(self, name, n=1):
        """Add ``n`` to the total ``name`` (received, dropped, processed, invalid, failed)."""
        with self._lock:
            self.totals[name] += n

    def record(self, stage_ms):
        """Count one processed frame with its {stage: milliseconds} times."""
        with self._lock:
            self.totals['processed'] += 1
            for name, ms in stage_ms.items():
                self._sums[name] += ms

    def window(self):
        """Return the :class:`Window` since the previous call and start a new one."""
        with self._lock:
            now = time.monotonic()
            delta = {k: v - self._last[k] for k, v in self.totals.items()}
            n = max(delta['processed'], 1)
            means = {name: total / n for name, total in self._sums.items()}
            win = Window(now - self._since, mean_ms=means if delta['processed'] else {},
                         **delta)
            self._last, self._since = dict(self.totals), now
            self._sums = dict.fromkeys(STAGES, 0.0)
        return win


def diagnostic_status(name, hardware_id, active, window, totals, info):
    """Return the ``DiagnosticStatus`` of one window.

    Level: OK while images flow (or while inactive), WARN when active but no image arrived in
    the window or some were invalid, ERROR when inference failed. ``info``: extra {key: value}
    (backend, model, ...) reported as they are.
    """
    level, message = DiagnosticStatus.OK, 'inactive' if not active else 'running'
    if active and window.received == 0:
        level, message = DiagnosticStatus.WARN, 'no images received'
    if active and window.invalid:
        level, message = DiagnosticStatus.WARN, f'{window.invalid} invalid images skipped'
    if active and window.failed:
        level, message = DiagnosticStatus.ERROR, f'inference failed on {window.failed} images'
    values = {'input_rate_hz': f'{window.input_rate:.2f}',
              'output_rate_hz': f'{window.output_rate:.2f}',
              'window_s': f'{window.seconds:.2f}'}
    values.update({f'{k}_in_window': str(getattr(window, k))
                   for k in ('received', 'dropped', 'processed', 'invalid', 'failed')})
    values.update({f'{k}_total': str(v) for k, v in totals.items()})
    values.update({f'{stage}_ms': f'{ms:.2f}' for stage, ms in window.mean_ms.items()})
    values.update({k: str(v) for k, v in info.items()})
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
