"""The pose node's frame counts: every window's totals agree with the windows' own counts."""
import threading

from rtmo_ros.diagnostics import PipelineStats


def test_window_totals_equal_the_counts_of_all_windows_so_far_while_frames_are_counted():
    """A status must not show a total that no window has counted yet (it said 'no images
    received' beside a non-zero no_camera_info total when the totals were read after the
    window)."""
    stats = PipelineStats()
    done = threading.Event()

    def count():
        while not done.is_set():
            stats.count('received')
            stats.count('no_camera_info')

    worker = threading.Thread(target=count)
    worker.start()
    seen = {'received': 0, 'no_camera_info': 0}
    try:
        for _ in range(2000):
            window = stats.window()
            for name in seen:
                seen[name] += getattr(window, name)
                assert window.totals[name] == seen[name]
    finally:
        done.set()
        worker.join()
    assert seen['received'] > 0
