"""Two processes (two camera nodes on first boot) fetching one model at once both succeed.

The server holds the first download half-way until the second process reports that it waits
for the cache lock; then the first finishes, and the second finds the file there, verified.
"""
import hashlib
import io
import queue
import subprocess
import sys
import threading
import zipfile

from download_server import start_server
import pytest

from rtmo_ros.engine import download

CHILD = '''
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')
from rtmo_ros.engine import download
kind, url, folder = sys.argv[1:]
if kind == 'checkpoint':
    path = download.fetch_checkpoint(url, None, folder, progress=False)
else:
    path = download.fetch_onnx_zip(url, folder, progress=False)
print(path, flush=True)
'''


def start_child(kind, url, folder):
    return subprocess.Popen([sys.executable, '-c', CHILD, kind, url, str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(stream, text, timeout=60):
    """Block until a line of ``stream`` contains ``text``; return the lines read."""
    lines = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen = []
    while True:
        line = lines.get(timeout=timeout)
        assert line is not None, f'stream ended without {text!r}: {seen}'
        seen.append(line)
        if text in line:
            return seen


def zip_bytes(onnx_bytes):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as archive:
        archive.writestr('rtmo-x/end2end.onnx', onnx_bytes)
    return buf.getvalue()


@pytest.mark.parametrize('kind, name', [('checkpoint', 'race.pth'), ('onnx', 'rtmo-race.zip')])
def test_two_processes_fetch_one_model_once(tmp_path, kind, name):
    routes, base, httpd = start_server()
    payload = bytes(range(256)) * 4096 if kind == 'checkpoint' else zip_bytes(b'g' * 100000)
    gate = threading.Event()
    routes.hold(f'/{name}', payload, gate)
    folder = tmp_path / kind
    try:
        first = start_child(kind, f'{base}/{name}', folder)
        assert routes.first_hit[f'/{name}'].wait(60), 'the first process never connected'
        second = start_child(kind, f'{base}/{name}', folder)
        wait_for_line(second.stderr, 'waiting for another process')
        gate.set()
        out1, err1 = first.communicate(timeout=60)
        out2 = second.stdout.read()
        assert second.wait(timeout=60) == 0 and first.returncode == 0, err1
    finally:
        gate.set()
        httpd.shutdown()
    assert out1 == out2 and routes.hits[f'/{name}'] == 1  # downloaded once, used twice
    path = folder / out1.strip().split(str(folder) + '/')[1]
    expected = payload if kind == 'checkpoint' else b'g' * 100000
    assert path.read_bytes() == expected
    assert download.read_pin(path) == hashlib.sha256(expected).hexdigest()
    assert not [p for p in folder.rglob('.*') if '.part' in p.name or '.unzip.' in p.name]
