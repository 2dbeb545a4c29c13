"""Lifecycle cycling of the rtmo_pose node under a live image stream: leaks and transition times.

    python benchmarks/bench_lifecycle.py [--cycles 200] [--warmup 3] [--rate 30]

One process holds the node (``PoseNode``: bundled rtmo-tiny-synthetic model, ONNX Runtime, one
thread) and a camera node in one rclpy context, spun by a two-thread MultiThreadedExecutor (as
``pose_node.main`` does); a third thread publishes 320x240 synthetic frames with people
(reliable) at ``--rate`` Hz the whole time. Each cycle is configure -> activate -> wait for
``--poses`` PersonArrays of frames sent after the activation -> deactivate (a frame is usually
being inferred at that moment) -> cleanup, the transitions called as the lifecycle services
would (``trigger_*``). Samples this process's RSS (in use, after ``malloc_trim``, and raw), thread
and fd counts after every cycle; prints them at start, after the warm-up, every 25 cycles and
at the end, the growth from the warm-up to the end and each transition's median / max time.
glibc's mmap threshold is pinned (``steady_malloc``) so that heap fragmentation does not
swamp the RSS figures.
``test/test_lifecycle_cycling.py`` runs the same rig for 15 cycles with pass/fail limits.
Run it from a shell where ``env.sh`` and ``scripts/loopback_dds.sh`` are sourced.
"""
import argparse
import gc
import os
import pathlib
import statistics
import sys
import threading
import time
from typing import NamedTuple

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRANSITIONS = ('configure', 'activate', 'deactivate', 'cleanup')
MODEL = 'rtmo-tiny-synthetic'
M_MMAP_THRESHOLD = -3  # mallopt() parameter number (glibc malloc.h)


class Resources(NamedTuple):
    """What a leak would grow, for this process."""

    rss_mib: float      # VmRSS (/proc/self/status) after gc and malloc_trim: memory in use
    rss_raw_mib: float  # VmRSS as found, freed heap pages that glibc keeps mapped included
    py_threads: int     # threading.active_count(): Python threads (worker, executor pool)
    os_threads: int     # /proc/self/task: every thread, ONNX Runtime's and the DDS's included
    fds: int            # /proc/self/fd: files, sockets, shared memory segments


def _rss_mib():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith('VmRSS:')) / 1024


def _libc():
    import ctypes

    return ctypes.CDLL(None)


def steady_malloc():
    """Make glibc serve every allocation of 128 KiB or more with its own mmap (no-op elsewhere).

    glibc starts with that threshold but raises it each time such a block is freed (up to
    32 MiB), after which big transient buffers (ONNX Runtime's arena chunks, 230 KB image
    messages) land inside heap arenas, fragment them, and the RSS swings by up to 20 MiB
    between consecutive cycles (seen here: 154 -> 176 -> 155 MiB), hiding or faking a leak.
    Setting the threshold fixes it at the starting value: swings drop below 1 MiB.
    """
    try:
        _libc().mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (AttributeError, OSError):
        pass


def _malloc_trim():
    """Hand glibc's free heap pages back to the OS (no-op on other C libraries).

    Each activation starts a new worker thread and each configure builds an ONNX Runtime
    session (tens of MB, freed at cleanup); glibc keeps freed pages of its per-thread arenas
    mapped, so the raw RSS climbs for tens of cycles and then levels off (+5-8 % here) without
    anything being held. After ``malloc_trim(0)`` VmRSS counts only what is still allocated,
    which a real leak keeps growing.
    """
    try:
        _libc().malloc_trim(0)
    except (AttributeError, OSError):
        pass


def process_resources():
    """Sample :class:`Resources` of this process (raw RSS first, then gc + malloc_trim)."""
    raw = _rss_mib()
    gc.collect()
    _malloc_trim()
    return Resources(_rss_mib(), raw, threading.active_count(),
                     len(os.listdir('/proc/self/task')), len(os.listdir('/proc/self/fd')))


def synthetic_messages(count, size=(320, 240), seed=1):
    """``count`` consecutive frames of a synthetic scene with people, as sensor_msgs/Image."""
    from std_msgs.msg import Header

    from rtmo_ros.image_conversion import bgr_to_image
    from rtmo_train.data.synthetic import render_sequence

    return [bgr_to_image(image, Header(frame_id='camera_optical'))
            for image, _ in render_sequence(seed, count, *size)]


class CyclingRig:
    """The node and a camera in one rclpy context, frames streaming at ``rate`` Hz.

    ``cycle()`` runs one configure -> activate -> deactivate -> cleanup round; ``close()``
    shuts everything down. Raises what ``PoseNode`` raises for bad parameters.
    """

    def __init__(self, namespace, rate=30.0, model=MODEL):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from rtmo_msgs.msg import PersonArray
        from rtmo_ros.pose_node import PoseNode

        steady_malloc()
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = PoseNode(context=self.context, namespace=namespace, parameter_overrides=[
            Parameter('model', value=model), Parameter('backend', value='onnxruntime'),
            Parameter('num_threads', value=1)])
        self.camera = rclpy.create_node('lifecycle_bench_camera', namespace=namespace,
                                        context=self.context)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self._pub = self.camera.create_publisher(Image, 'image', reliable)
        self._stamps = []  # header stamps (ns) of the PersonArrays received, in order
        self.camera.create_subscription(PersonArray, 'poses', self._on_poses, reliable)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.camera)
        self.spin_errors = []  # InvalidHandle races survived by _spin_loop
        self._closing = threading.Event()
        self._spin = threading.Thread(target=self._spin_loop, name='rig_spin', daemon=True)
        self._spin.start()
        self._stop = threading.Event()
        self._frames = threading.Thread(target=self._stream, args=(synthetic_messages(8), rate),
                                        name='rig_camera', daemon=True)
        self._frames.start()

    def _spin_loop(self):
        """``executor.spin()`` that survives rclpy's destroy-while-waiting race.

        rclpy (ros2/rclpy#1284, #1206; still in Jazzy's 9.1.2) adds a waitable whose handle
        is being destroyed to the wait set anyway: a subscription's event handler destroyed by
        deactivate while this thread builds a wait set raises InvalidHandle out of spin(),
        which would stop all callbacks (seen once in ~250 cycles). The next spin_once builds
        a fresh wait set without it, so the race is counted and spinning goes on.
        """
        from rclpy.exceptions import InvalidHandle

        while not self._closing.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except InvalidHandle as err:
                self.spin_errors.append(repr(err))

    def quiet(self):
        """Log only the node's warnings and errors (not a line per configure / activate)."""
        from rclpy.logging import LoggingSeverity

        self.node.get_logger().set_level(LoggingSeverity.WARN)

    def _on_poses(self, msg):
        self._stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)

    def _stream(self, messages, rate):
        """Publish ``messages`` round and round at ``rate`` Hz, stamped with the send time."""
        start, i = time.monotonic(), 0
        while not self._stop.is_set():
            msg = messages[i % len(messages)]
            msg.header.stamp = self.camera.get_clock().now().to_msg()
            self._pub.publish(msg)
            i += 1
            self._stop.wait(max(0.0, start + i / rate - time.monotonic()))

    def poses_since(self, stamp_ns):
        """Number of PersonArrays received for frames stamped at or after ``stamp_ns``."""
        return sum(s >= stamp_ns for s in list(self._stamps))

    def cycle(self, poses=2, timeout=10.0):
        """Configure, activate, wait for ``poses`` PersonArrays, deactivate, clean up.

        Returns {'results': {transition: TransitionCallbackReturn}, 'seconds': {transition:
        s}, 'poses': PersonArrays of frames sent while active (counted just before
        deactivate), 'in_flight': whether a frame was being inferred at deactivate}. Stops at
        the first transition that does not return SUCCESS.
        """
        from rclpy.lifecycle import TransitionCallbackReturn

        out = {'results': {}, 'seconds': {}, 'poses': 0, 'in_flight': False}
        for name in TRANSITIONS:
            if name == 'activate':
                since = self.camera.get_clock().now().nanoseconds
            if name == 'deactivate':
                deadline = time.monotonic() + timeout
                while self.poses_since(since) < poses and time.monotonic() < deadline:
                    time.sleep(0.01)
                out['poses'] = self.poses_since(since)
                out['in_flight'] = bool(getattr(self.node, '_running', None))  # a peek only
            start = time.perf_counter()
            result = getattr(self.node, f'trigger_{name}')()
            out['seconds'][name] = time.perf_counter() - start
            out['results'][name] = result
            if result != TransitionCallbackReturn.SUCCESS:
                break
        return out

    def close(self):
        """Stop the frames, shut the node down (from any state) and the context."""
        import rclpy

        self._stop.set()
        self._frames.join(timeout=5.0)
        try:
            self.node.trigger_shutdown()
        finally:
            self._closing.set()
            self.executor.shutdown()
            self._spin.join(timeout=5.0)
            self.node.destroy_node()
            self.camera.destroy_node()
            rclpy.try_shutdown(context=self.context)


def show(label, r):
    print(f'{label:13s} RSS {r.rss_mib:7.1f} MiB in use, {r.rss_raw_mib:7.1f} MiB raw  '
          f'threads {r.py_threads:3d} Python / {r.os_threads:3d} OS  fds {r.fds:4d}', flush=True)


def growth(before, after):
    """Growth in % of ``after`` over ``before``."""
    return 100.0 * (after - before) / before


def summary(times, warm, end, active_poses, in_flight):
    """Print the growth after the warm-up and the transition times."""
    print(f'after warm-up: RSS in use {end.rss_mib - warm.rss_mib:+.1f} MiB '
          f'({growth(warm.rss_mib, end.rss_mib):+.2f} %), raw '
          f'{end.rss_raw_mib - warm.rss_raw_mib:+.1f} MiB '
          f'({growth(warm.rss_raw_mib, end.rss_raw_mib):+.2f} %); threads '
          f'{end.py_threads - warm.py_threads:+d} Python / {end.os_threads - warm.os_threads:+d}'
          f' OS; fds {end.fds - warm.fds:+d}')
    for name in TRANSITIONS:
        t = times[name]
        print(f'{name:10s} median {1e3 * statistics.median(t):7.1f} ms  '
              f'max {1e3 * max(t):7.1f} ms  (n={len(t)})')
    print(f'PersonArrays per active phase: min {min(active_poses)}, median '
          f'{statistics.median(active_poses):g}; deactivate with a frame in flight: '
          f'{sum(in_flight)}/{len(in_flight)}')


def run_cycles(rig, args):
    """Cycle ``args.cycles`` times; return (transition times, samples, poses, in flight)."""
    times = {name: [] for name in TRANSITIONS}
    samples, active_poses, in_flight = [], [], []
    for i in range(args.cycles):
        out = rig.cycle(poses=args.poses)
        failed = [n for n, r in out['results'].items() if r.name != 'SUCCESS']
        if failed or out['poses'] < args.poses:
            print(f'cycle {i + 1}: {failed or "no poses"} failed ({out})', flush=True)
            break
        for name, seconds in out['seconds'].items():
            times[name].append(seconds)
        active_poses.append(out['poses'])
        in_flight.append(out['in_flight'])
        samples.append(process_resources())  # unconfigured, frames still streaming
        if i + 1 == args.warmup:
            show(f'warm-up ({i + 1})', samples[-1])
        elif (i + 1) % 25 == 0 or i + 1 == args.cycles:
            show('end' if i + 1 == args.cycles else f'cycle {i + 1}', samples[-1])
    return times, samples, active_poses, in_flight


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cycles', type=int, default=200)
    parser.add_argument('--warmup', type=int, default=3, help='cycles before the baseline')
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second')
    parser.add_argument('--poses', type=int, default=2,
                        help='PersonArrays to wait for in each active phase')
    parser.add_argument('--model', default=MODEL)
    args = parser.parse_args(argv)

    show('start', process_resources())
    began = time.monotonic()
    rig = CyclingRig(f'/bench_lifecycle_{os.getpid()}', rate=args.rate, model=args.model)
    rig.quiet()
    try:
        times, samples, active_poses, in_flight = run_cycles(rig, args)
    finally:
        rig.close()
    print(f'{len(samples)} cycles in {time.monotonic() - began:.1f} s; executor '
          f'InvalidHandle races survived (rclpy#1284): {len(rig.spin_errors)}')
    if len(samples) <= args.warmup:
        print(f'too few cycles for a comparison (warm-up {args.warmup})')
        return
    summary(times, samples[args.warmup - 1], samples[-1], active_poses, in_flight)


if __name__ == '__main__':
    main()
