"""Pipeline statistics of the pose node and their diagnostic_msgs form.

The worker thread records each processed frame's stage times; the node's ~1 Hz timer takes a
:class:`Window` (means and counts since the previous one) and publishes it with
:func:`diagnostic_status` on ``/diagnostics``.
"""
from dataclasses import dataclass, field
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

COUNTS = ('received', 'dropped', 'processed', 'invalid', 'failed', 'timeouts',
          'no_depth', 'depth_refused', 'no_camera_info')
# Stage names in pipeline order, all in milliseconds: wait = image received -> worker starts
# it (newest-frame queue), convert = Image -> BGR, preprocess/inference/postprocess = the
# engine's own timings, perception = depth decoding + tracking + smoothing + 3D lifting,
# publish = messages built and published, total = received -> poses out.
STAGES = ('wait', 'convert', 'preprocess', 'inference', 'postprocess', 'perception', 'publish',
          'total')


@dataclass
class Window:
    """What happened since the previous window: counts, rates [Hz] and mean stage times [ms]."""

    seconds: float
    received: int
    dropped: int
    processed: int
    invalid: int
    failed: int
    timeouts: int = 0
    no_depth: int = 0        # frames without 3D (use_depth): no depth image within tolerance
    depth_refused: int = 0   # ... a depth image of another size / frame / encoding
    no_camera_info: int = 0  # ... no (valid) camera_info of the image's frame and size
    mean_ms: dict = field(default_factory=dict)
    totals: dict = field(default_factory=dict)  # the running totals at the window's end

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
        self.totals = dict.fromkeys(COUNTS, 0)
        self._last = dict(self.totals)
        self._sums = dict.fromkeys(STAGES, 0.0)
        self._since = time.monotonic()

    def count(self, name, n=1):
        """Add ``n`` to the total ``name`` (one of COUNTS)."""
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
            # the totals under the same lock: read later, a frame counted in between would be
            # in the totals but in no window's counts (and the status would contradict itself)
            win = Window(now - self._since, mean_ms=means if delta['processed'] else {},
                         totals=dict(self.totals), **delta)
            self._last, self._since = dict(self.totals), now
            self._sums = dict.fromkeys(STAGES, 0.0)
        return win


def diagnostic_status(name, hardware_id, state, window, totals, info, problems=()):
    """Return the ``DiagnosticStatus`` of one window.

    ``state``: the lifecycle state label. Level: OK while images flow (or while not active),
    WARN when active but no image arrived in the window or some were invalid, ERROR when
    inference failed or a frame ran past the timeout. ``problems``: [(level, message)] found
    by the node (last configure error, a frame running too long, incompatible QoS); the most
    severe of everything sets the level and the message (a problem before a count).
    ``info``: extra {key: value} (backend, model, ...) reported as they are.
    """
    active = state == 'active'
    found = [(DiagnosticStatus.OK, 'running' if active else state)]
    if active and window.received == 0:
        found.append((DiagnosticStatus.WARN, 'no images received'))
    if active and window.invalid:
        found.append((DiagnosticStatus.WARN, f'{window.invalid} invalid images skipped'))
    without_3d = window.no_depth + window.depth_refused + window.no_camera_info
    if active and without_3d:
        found.append((DiagnosticStatus.WARN,
                      f'{without_3d} frames without 3D ({window.no_depth} without a depth '
                      f'image in time, {window.depth_refused} depth images refused, '
                      f'{window.no_camera_info} without camera_info)'))
    if window.failed:
        found.append((DiagnosticStatus.ERROR, f'inference failed on {window.failed} images'))
    if window.timeouts:
        found.append((DiagnosticStatus.ERROR, f'{window.timeouts} frames took longer than '
                                              'inference_timeout_s'))
    found.extend(problems)
    level, message = found[0]
    for lvl, text in found[1:]:  # the most severe; at equal level the later, more specific one
        if lvl >= level:
            level, message = lvl, text
    values = {'input_rate_hz': f'{window.input_rate:.2f}',
              'output_rate_hz': f'{window.output_rate:.2f}',
              'window_s': f'{window.seconds:.2f}'}
    values.update({f'{k}_in_window': str(getattr(window, k)) for k in COUNTS})
    values.update({f'{k}_total': str(v) for k, v in totals.items()})
    values.update({f'{stage}_ms': f'{ms:.2f}' for stage, ms in window.mean_ms.items()})
    values.update({k: str(v) for k, v in info.items()})
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
