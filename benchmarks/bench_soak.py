"""Soak run of the rtmo_pose node process: memory drift, latency and drops over many frames.

    python benchmarks/bench_soak.py [--frames 10000] [--rate 30] [--model rtmo-tiny-synthetic]

Not part of ``make test`` (the default takes ~6 minutes). Starts ``python -m rtmo_ros.pose_node``
(autostart, ONNX Runtime, bundled model, its own namespace), publishes synthetic 320x240 frames
with people (reliable) at ``--rate`` Hz, each stamped with its index, and prints progress every
``--progress`` frames. Then prints the node process's RSS drift (VmRSS sampled every
``--sample-s`` s: mean of the first minute against the last minute, MB and %), the latency
publish -> PersonArray received (matched by stamp; p50, p99, max) of the frames that got one,
and the drops from the node's own ``/diagnostics`` totals. At 30 Hz the node cannot keep up on
a small CPU: it drops (and counts) frames rather than queueing them, so drops are expected;
latency and drift must stay flat. Run it from a shell where ``env.sh`` and
``scripts/loopback_dds.sh`` are sourced.
"""
import argparse
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAMP_SEC = 1_700_000_000  # frames carry (STAMP_SEC, index + 1)


def vm_rss_mib(pid):
    """VmRSS of process ``pid`` in MiB, or None once it has exited."""
    try:
        with open(f'/proc/{pid}/status') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``period`` s into ``samples`` [(monotonic s, MiB)]."""

    def __init__(self, pid, period):
        super().__init__(name='rss_sampler', daemon=True)
        self.pid, self.period, self.samples = pid, period, []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            rss = vm_rss_mib(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            self.stop.wait(self.period)


def start_node(args, namespace, log):
    cmd = [sys.executable, '-m', 'rtmo_ros.pose_node', '--ros-args', '-r', f'__ns:={namespace}',
           '-p', f'model:={args.model}', '-p', 'backend:=onnxruntime', '-p', 'autostart:=true',
           '-p', f'num_threads:={args.threads}', '-p', 'qos_reliability:=reliable']
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_node(proc):
    """SIGINT the node (as Ctrl-C), kill it after 10 s; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Client:
    """Publishes the frames; records PersonArray arrivals and the node's diagnostics totals."""

    def __init__(self, namespace):
        from diagnostic_msgs.msg import DiagnosticArray
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from rtmo_msgs.msg import PersonArray

        rclpy.init()
        self.node = rclpy.create_node('soak_client', namespace=namespace)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.status_name = f'{namespace}/rtmo_pose: pose estimation'
        self.arrived = {}   # stamp nanosec (frame index + 1) -> perf_counter at arrival
        self.totals = {}    # latest *_total values of the node's /diagnostics status
        self.pub = self.node.create_publisher(Image, 'image', QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(PersonArray, 'poses', self._on_poses, reliable)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      reliable)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_poses(self, msg):
        self.arrived.setdefault(msg.header.stamp.nanosec, time.perf_counter())

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name == self.status_name:
                self.totals = {kv.key[:-len('_total')]: int(kv.value) for kv in status.values
                               if kv.key.endswith('_total')}

    def close(self):
        import rclpy

        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown()


def frames(count=30, seed=3):
    """``count`` consecutive 320x240 frames of a synthetic scene with people, as Image."""
    from std_msgs.msg import Header

    from rtmo_ros.image_conversion import bgr_to_image
    from rtmo_train.data.synthetic import render_sequence

    return [bgr_to_image(image, Header(frame_id='camera_optical'))
            for image, _ in render_sequence(seed, count, 320, 240)]


def publish_all(client, args, rss):
    """Publish ``args.frames`` frames at ``args.rate`` Hz.

    Returns ({index + 1: perf_counter at send}, monotonic start, seconds taken).
    """
    messages, sent = frames(), {}
    began, start = time.monotonic(), time.perf_counter()
    for i in range(args.frames):
        msg = messages[i % len(messages)]
        msg.header.stamp.sec, msg.header.stamp.nanosec = STAMP_SEC, i + 1
        sent[i + 1] = time.perf_counter()
        client.pub.publish(msg)
        if (i + 1) % args.progress == 0:
            lat = latencies(sent, client.arrived)
            p50 = f'{1e3 * np.median(lat):.1f} ms' if len(lat) else '-'
            print(f'{i + 1:6d} frames  {time.perf_counter() - start:7.1f} s  '
                  f'PersonArrays {len(client.arrived):6d}  latency p50 {p50}  '
                  f'node RSS {rss.samples[-1][1] if rss.samples else float("nan"):.1f} MiB',
                  flush=True)
        time.sleep(max(0.0, start + (i + 1) / args.rate - time.perf_counter()))
    return sent, began, time.perf_counter() - start


def latencies(sent, arrived):
    """Seconds from publish to PersonArray of every frame that got one."""
    return np.array([arrived[k] - sent[k] for k in list(arrived) if k in sent])


def drift(samples, window):
    """(first-window mean, last-window mean, window used) of [(t, MiB)] RSS samples.

    The window shrinks to a third of the samples' span when that is shorter than three windows.
    """
    t0, t1 = samples[0][0], samples[-1][0]
    window = min(window, (t1 - t0) / 3)
    first = [m for t, m in samples if t <= t0 + window]
    last = [m for t, m in samples if t >= t1 - window]
    return float(np.mean(first)), float(np.mean(last)), window


def report(args, sent, began, seconds, client, rss):
    print(f'sent {len(sent)} frames in {seconds:.1f} s ({len(sent) / seconds:.1f} Hz)')
    lat = latencies(sent, client.arrived)
    if len(lat):
        print(f'PersonArrays {len(lat)} ({100 * len(lat) / len(sent):.1f} % of the frames); '
              f'latency p50 {1e3 * np.median(lat):.1f} ms  p99 '
              f'{1e3 * np.percentile(lat, 99):.1f} ms  max {1e3 * lat.max():.1f} ms')
    t = client.totals
    if t:
        lost = len(sent) - t.get('received', 0)
        print(f"node /diagnostics totals: received {t.get('received', 0)}, processed "
              f"{t.get('processed', 0)}, dropped {t.get('dropped', 0)} (newest-frame buffer), "
              f"invalid {t.get('invalid', 0)}, failed {t.get('failed', 0)}; "
              f'{lost} sent frame(s) never reached the node callback (depth-1 reader history)')
    else:
        print('no /diagnostics status from the node')
    streaming = [s for s in rss.samples if s[0] >= began]  # model loaded, node active
    if len(streaming) >= 3:
        first, last, window = drift(streaming, args.window)
        change = 100 * (last - first) / first
        print(f'node RSS: first {window:.0f} s {first:.1f} MiB, last {window:.0f} s '
              f'{last:.1f} MiB: drift {last - first:+.1f} MiB ({change:+.2f} %); max '
              f'{max(m for _, m in streaming):.1f} MiB ({len(streaming)} samples while frames '
              'streamed)')


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=10_000)
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second')
    parser.add_argument('--model', default='rtmo-tiny-synthetic')
    parser.add_argument('--threads', type=int, default=1, help='ONNX Runtime threads')
    parser.add_argument('--progress', type=int, default=1000, help='print every N frames')
    parser.add_argument('--sample-s', type=float, default=2.0, help='RSS sampling period')
    parser.add_argument('--window', type=float, default=60.0,
                        help='seconds averaged at each end for the RSS drift')
    args = parser.parse_args(argv)

    namespace = f'/soak_{os.getpid()}'
    log = tempfile.NamedTemporaryFile('w', prefix='bench_soak_node_', suffix='.log',
                                      delete=False)
    proc = start_node(args, namespace, log)
    client = Client(namespace)
    rss = RssSampler(proc.pid, args.sample_s)
    rss.start()
    try:
        if not wait_until(lambda: client.pub.get_subscription_count() > 0
                          or proc.poll() is not None, 120.0) or proc.poll() is not None:
            raise SystemExit(f'the node did not subscribe (exit code {proc.poll()}); see '
                             f'{log.name}')
        time.sleep(1.0)  # let the subscription match the publisher both ways
        sent, began, seconds = publish_all(client, args, rss)
        wait_until(lambda: args.frames in client.arrived, 5.0)
        time.sleep(2.5)  # two more /diagnostics periods: final totals
    finally:
        rss.stop.set()
        code = stop_node(proc)
        client.close()
        log.close()
    report(args, sent, began, seconds, client, rss)
    print(f'node exit code {code} (log: {log.name})')


if __name__ == '__main__':
    main()
