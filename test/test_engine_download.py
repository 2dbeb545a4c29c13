"""Model zoo table and downloads, over a real local HTTP server and file:// URLs (offline)."""
import functools
import hashlib
import http.server
import re
import threading
import zipfile

import pytest

from rtmo_ros.engine import download, zoo
from rtmo_ros.engine.download import ChecksumError, DownloadError


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """Serve a temporary folder on 127.0.0.1; yield (folder, base URL)."""
    root = tmp_path_factory.mktemp('served')
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()


def test_http_download_is_verified_and_atomic(server, tmp_path):
    root, base = server
    payload = bytes(range(256)) * 5000
    (root / 'm-0123abcd_20231211.pth').write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / 'cache' / 'm.pth'
    got = download.download(f'{base}/m-0123abcd_20231211.pth', dest, sha256=digest[:8],
                            progress=False)
    assert got == dest and dest.read_bytes() == payload
    with pytest.raises(ChecksumError, match='expected 00000000'):
        download.download(f'{base}/m-0123abcd_20231211.pth', tmp_path / 'bad.pth',
                          sha256='00000000', progress=False)
    assert not (tmp_path / 'bad.pth').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['cache']  # no .part left behind


def test_unreachable_url_names_url_and_local_file_fix(server, tmp_path):
    _, base = server
    with pytest.raises(DownloadError, match='404') as err:
        download.download(f'{base}/missing.zip', tmp_path / 'x.zip', progress=False)
    assert f'{base}/missing.zip' in str(err.value) and 'local file' in str(err.value)
    with pytest.raises(DownloadError, match='could not download http://127.0.0.1:9/'):
        download.download('http://127.0.0.1:9/a.pth', tmp_path / 'a.pth', progress=False,
                          timeout=2)


def make_sdk_zip(path, onnx_bytes=b'fake-onnx'):
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('rtmo-x/end2end.onnx', onnx_bytes)
        archive.writestr('rtmo-x/pipeline.json', '{}')


def test_onnx_zip_is_unpacked_once(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    make_sdk_zip(served / 'rtmo-x.zip')
    url = (served / 'rtmo-x.zip').as_uri()
    onnx = download.fetch_onnx_zip(url, tmp_path / 'home' / 'onnx', progress=False)
    assert onnx.name == 'end2end.onnx' and onnx.read_bytes() == b'fake-onnx'
    (served / 'rtmo-x.zip').unlink()  # a second fetch must not need the network
    assert download.fetch_onnx_zip(url, tmp_path / 'home' / 'onnx', progress=False) == onnx
    assert not list((tmp_path / 'home' / 'onnx').glob('*.zip'))


def test_corrupt_zip_and_cached_checkpoint_mismatch(tmp_path):
    bad = tmp_path / 'bad.zip'
    bad.write_bytes(b'PK not really a zip')
    with pytest.raises(ChecksumError, match='not a valid zip'):
        download.extract_onnx(bad, tmp_path / 'out')
    folder = tmp_path / 'checkpoints'
    folder.mkdir()
    (folder / 'm-deadbeef_20231211.pth').write_bytes(b'tampered')
    with pytest.raises(ChecksumError, match='deadbeef'):
        download.fetch_checkpoint('file:///nowhere/m-deadbeef_20231211.pth', 'deadbeef', folder)


def test_models_home_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('RTMO_HOME', str(tmp_path / 'rtmo'))
    assert download.models_home() == tmp_path / 'rtmo'
    monkeypatch.delenv('RTMO_HOME')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert download.models_home() == tmp_path / 'xdg' / 'rtmo_ros'


def test_zoo_table_is_complete_and_consistent():
    assert len(zoo.names()) == 11
    for entry in zoo.ZOO.values():
        assert entry.checkpoint_url.startswith(zoo.BASE) and entry.checkpoint_url.endswith('.pth')
        assert re.fullmatch('[0-9a-f]{8}', entry.checkpoint_sha256_prefix)
        assert entry.keypoints == (14 if 'crowdpose' in entry.name else 17)
        assert entry.input_size == ((416, 416) if entry.variant == 't' else (640, 640))
        if entry.onnx_url:
            assert entry.dataset == 'body7'
            assert entry.onnx_url == (zoo.BASE + 'onnx_sdk/'
                                      + entry.checkpoint_url.rsplit('/', 1)[1][:-4] + '.zip')
    assert zoo.get('rtmo-s_8xb32-600e_body7-640x640').name == 'rtmo-s-body7'
    assert zoo.get('rtmo-m-crowdpose').checkpoint_url.endswith(
        '/rrtmo-m_16xb16-700e_crowdpose-640x640-0eaf670d_20231211.pth')


def test_zoo_name_resolves_through_the_cache(monkeypatch, tmp_path):
    # a cached, unpacked zip is used as is: no network needed
    entry = zoo.get('rtmo-t-body7')
    stem = entry.onnx_url.rsplit('/', 1)[1][:-4]
    target = tmp_path / 'onnx' / stem / 'x' / 'end2end.onnx'
    target.parent.mkdir(parents=True)
    target.write_bytes(b'x')
    monkeypatch.setenv('RTMO_HOME', str(tmp_path))
    assert download.fetch_entry(entry) == target
