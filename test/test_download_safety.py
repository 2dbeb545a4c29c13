"""Downloads that cannot be tampered with: https only, whole, pinned, safe zips, stale cleanup.

All over a local HTTP server on 127.0.0.1 (download_server.py); no network needed.
"""
import hashlib
import io
import os
import shutil
import struct
import time
import zipfile

from download_server import start_server
import pytest

from rtmo_ros.engine import download, zoo
from rtmo_ros.engine.download import ChecksumError, DownloadError, UnsafeArchiveError

# Two payloads whose sha256 share the first 8 hex digits (found by a birthday search over
# b'rtmo-<i>'): the official-name prefix alone cannot tell them apart, the pin can.
GOOD, EVIL = b'rtmo-43816', b'rtmo-66745'
PREFIX = 'e4135f52'


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope='module')
def server():
    routes, base, httpd = start_server()
    yield routes, base
    httpd.shutdown()


def leftovers(folder):
    """Temporaries (.part files, .unzip. folders) under ``folder``."""
    return [p.name for p in folder.rglob('.*') if '.part' in p.name or '.unzip.' in p.name]


def sdk_zip(onnx_bytes, members=None):
    """Bytes of an onnx_sdk-like zip (deflated)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, data in (members or {'rtmo-x/end2end.onnx': onnx_bytes,
                                       'rtmo-x/pipeline.json': b'{}'}).items():
            archive.writestr(name, data)
    return buf.getvalue()


def test_prefix_collision_fixture_is_real():
    assert sha(GOOD) != sha(EVIL) and sha(GOOD)[:8] == sha(EVIL)[:8] == PREFIX


# --- transport -----------------------------------------------------------------------------

@pytest.mark.parametrize('url, ok', [
    ('https://download.openmmlab.com/a.pth', True), ('http://127.0.0.1:8000/a.pth', True),
    ('http://127.8.9.10/a.pth', True), ('http://localhost/a.pth', True),
    ('http://[::1]:8000/a.pth', True), ('file:///tmp/a.pth', True),
    ('http://download.openmmlab.com/a.pth', False), ('http://10.0.0.1/a.pth', False),
    ('http://localhost.evil.com/a.pth', False), ('ftp://example.com/a.pth', False)])
def test_only_https_or_loopback_http(url, ok):
    if ok:
        download.check_url(url)
    else:
        with pytest.raises(DownloadError, match='https only'):
            download.check_url(url)


def test_plain_http_to_the_internet_is_refused_before_connecting(tmp_path):
    with pytest.raises(DownloadError, match='http://example.com/m.pth'):
        download.download('http://example.com/m.pth', tmp_path / 'm.pth', progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('location', ['http://example.com/m.pth', 'file:///etc/hostname',
                                      'ftp://example.com/m.pth'])
def test_redirect_to_insecure_url_is_refused(server, tmp_path, location):
    routes, base = server
    routes.redirect('/insecure.pth', location)
    with pytest.raises(DownloadError) as err:
        download.download(f'{base}/insecure.pth', tmp_path / 'm.pth', progress=False)
    assert location in str(err.value)  # file:// is refused by urllib itself, the rest by us
    assert 'https only' in str(err.value) or 'not allowed' in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_redirect_within_loopback_is_followed(server, tmp_path):
    routes, base = server
    routes.serve('/real.pth', GOOD)
    routes.redirect('/moved.pth', f'{base}/real.pth')
    assert download.download(f'{base}/moved.pth', tmp_path / 'm.pth',
                             progress=False).read_bytes() == GOOD


def test_download_cut_mid_stream_is_refused(server, tmp_path):
    routes, base = server
    body = bytes(range(256)) * 40
    routes.truncate('/cut.pth', body, sent=4000)
    folder = tmp_path / 'checkpoints'
    with pytest.raises(DownloadError, match='truncated: 4000 of 10240 bytes'):
        download.fetch_checkpoint(f'{base}/cut.pth', None, folder, progress=False)
    assert not (folder / 'cut.pth').exists() and not leftovers(folder)
    assert not (folder / 'cut.pth.sha256').exists()


# --- trust on first use ----------------------------------------------------------------------

def test_checkpoint_hash_is_pinned_at_first_download(server, tmp_path):
    routes, base = server
    name = f'm-{PREFIX}_20231211.pth'
    url, folder = f'{base}/{name}', tmp_path / 'checkpoints'
    routes.serve(f'/{name}', GOOD)
    path = download.fetch_checkpoint(url, PREFIX, folder, progress=False)
    assert path.read_bytes() == GOOD
    assert (folder / f'{name}.sha256').read_text() == f'{sha(GOOD)}  {name}\n'

    path.write_bytes(EVIL)  # same size, same 8-hex prefix: only the pin catches it
    download.check_digest(sha(EVIL), PREFIX, 'prefix alone')  # passes
    with pytest.raises(ChecksumError, match='first verified download') as err:
        download.fetch_checkpoint(url, PREFIX, folder, progress=False)
    assert sha(GOOD) in str(err.value) and f'delete {path}' in str(err.value)

    path.unlink()  # the fix; but the server now hands out other bytes: refused too
    routes.serve(f'/{name}', EVIL)
    with pytest.raises(ChecksumError, match=sha(GOOD)[:16]):
        download.fetch_checkpoint(url, PREFIX, folder, progress=False)
    assert not path.exists() and not leftovers(folder)

    routes.serve(f'/{name}', GOOD)
    assert download.fetch_checkpoint(url, PREFIX, folder, progress=False) == path


def test_known_full_hash_is_required(server, tmp_path):
    routes, base = server
    routes.serve('/full.pth', EVIL)
    with pytest.raises(ChecksumError):
        download.fetch_checkpoint(f'{base}/full.pth', PREFIX, tmp_path, progress=False,
                                  sha256=sha(GOOD))
    routes.serve('/full.pth', GOOD)
    path = download.fetch_checkpoint(f'{base}/full.pth', PREFIX, tmp_path, progress=False,
                                     sha256=sha(GOOD))
    path.write_bytes(EVIL)
    with pytest.raises(ChecksumError):
        download.fetch_checkpoint(f'{base}/full.pth', PREFIX, tmp_path, sha256=sha(GOOD))


def test_onnx_zip_and_graph_are_pinned(server, tmp_path):
    routes, base = server
    first = sdk_zip(b'graph-1')
    routes.serve('/rtmo-pin.zip', first)
    folder = tmp_path / 'onnx'
    onnx = download.fetch_onnx_zip(f'{base}/rtmo-pin.zip', folder, progress=False)
    assert onnx.read_bytes() == b'graph-1'
    assert (folder / 'rtmo-pin.zip.sha256').read_text().split()[0] == sha(first)
    assert download.read_pin(onnx) == sha(b'graph-1')
    assert not (folder / 'rtmo-pin.zip').exists()

    onnx.write_bytes(b'graph-2')  # the cached graph changed after the first download
    with pytest.raises(ChecksumError, match='first verified download'):
        download.fetch_onnx_zip(f'{base}/rtmo-pin.zip', folder, progress=False)

    shutil.rmtree(folder / 'rtmo-pin')  # re-download: the server's zip changed meanwhile
    routes.serve('/rtmo-pin.zip', sdk_zip(b'graph-2'))
    with pytest.raises(ChecksumError, match=sha(first)[:16]):
        download.fetch_onnx_zip(f'{base}/rtmo-pin.zip', folder, progress=False)
    assert not (folder / 'rtmo-pin').exists() and not leftovers(folder)
    assert not (folder / 'rtmo-pin.zip').exists()

    routes.serve('/rtmo-pin.zip', first)
    assert download.fetch_onnx_zip(f'{base}/rtmo-pin.zip', folder,
                                   progress=False).read_bytes() == b'graph-1'


def test_zoo_has_a_field_for_full_hashes_but_none_is_invented():
    for entry in zoo.ZOO.values():
        assert entry.checkpoint_sha256 is None and entry.onnx_zip_sha256 is None


# --- zips --------------------------------------------------------------------------------------

def test_zip_bomb_is_refused_before_extraction(server, tmp_path, monkeypatch):
    routes, base = server
    routes.serve('/rtmo-bomb.zip', sdk_zip(b'\0' * 5000))  # deflates to a few bytes
    monkeypatch.setattr(download, 'MAX_UNZIPPED_BYTES', 4096)
    folder = tmp_path / 'onnx'
    with pytest.raises(UnsafeArchiveError, match='more than 4096 bytes'):
        download.fetch_onnx_zip(f'{base}/rtmo-bomb.zip', folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ['rtmo-bomb.lock']
    many = tmp_path / 'many.zip'  # each member under the cap, the total over it
    many.write_bytes(sdk_zip(None, {f'm{i}.onnx': b'\0' * 1500 for i in range(3)}))
    with pytest.raises(UnsafeArchiveError, match="member 'm2.onnx'"):
        download.extract_onnx(many, tmp_path / 'out', max_bytes=4096)
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


def set_declared_size(data, size):
    """Rewrite the uncompressed size of a one-member zip, local and central headers."""
    data = bytearray(data)
    struct.pack_into('<I', data, 22, size)  # local file header
    central = data.index(b'PK\x01\x02')
    struct.pack_into('<I', data, central + 24, size)
    return bytes(data)


def test_zip_that_understates_its_size_fails_its_crc(tmp_path):
    liar = tmp_path / 'liar.zip'
    liar.write_bytes(set_declared_size(sdk_zip(None, {'a.onnx': b'\0' * 5000}), 10))
    with zipfile.ZipFile(liar) as archive:
        assert archive.getinfo('a.onnx').file_size == 10  # passes the size check ...
    with pytest.raises(ChecksumError, match='not a valid zip'):  # ... but not extraction
        download.extract_onnx(liar, tmp_path / 'out', max_bytes=4096)
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


@pytest.mark.parametrize('member', ['../evil.onnx', 'rtmo-x/../../evil.onnx', '/tmp/evil.onnx',
                                    '..\\evil.onnx', 'C:/evil.onnx'])
def test_zip_slip_is_refused(tmp_path, member):
    archive = tmp_path / 'slip.zip'
    archive.write_bytes(sdk_zip(None, {'rtmo-x/end2end.onnx': b'ok', member: b'evil'}))
    with pytest.raises(UnsafeArchiveError, match='zip slip'):
        download.extract_onnx(archive, tmp_path / 'a' / 'b' / 'out')
    assert not list(tmp_path.rglob('evil.onnx')) and not leftovers(tmp_path)


# --- stale temporaries and read-only caches --------------------------------------------------

def test_stale_temporaries_are_removed_on_the_next_fetch(server, tmp_path):
    routes, base = server
    routes.serve('/s.pth', GOOD)
    folder = tmp_path / 'checkpoints'
    folder.mkdir()
    mine = folder / '.s.pth.k2j4h5g6.part'  # left by a killed fetch of the same file
    old = folder / '.other.pth.a1b2c3d4.part'  # another file's, untouched for 2 hours
    busy = folder / '.busy.pth.e5f6g7h8.part'  # another file's, being written now
    unzip = folder / '.rtmo-x.unzip.q1w2e3r4'
    for path in (mine, old, busy):
        path.write_bytes(b'partial')
    (unzip / 'rtmo-x').mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    for path in (old, unzip):
        os.utime(path, (two_hours_ago, two_hours_ago))
    download.fetch_checkpoint(f'{base}/s.pth', None, folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [busy.name, 's.pth', 's.pth.lock',
                                                        's.pth.sha256']


def blocked_home(tmp_path):
    """A cache path below a regular file: mkdir fails even for root (NotADirectoryError)."""
    (tmp_path / 'file.txt').write_text('not a folder')
    return tmp_path / 'file.txt' / 'rtmo'


@pytest.mark.parametrize('model', ['rtmo-s-coco', 'rtmo-t-body7'])
def test_unwritable_model_cache_names_rtmo_home(monkeypatch, tmp_path, model):
    monkeypatch.setenv('RTMO_HOME', str(blocked_home(tmp_path)))
    with pytest.raises(DownloadError, match='set RTMO_HOME to a writable folder') as err:
        download.fetch_entry(zoo.get(model), progress=False)
    assert str(blocked_home(tmp_path)) in str(err.value)


def test_unwritable_target_folder_during_download(server, tmp_path):
    routes, base = server
    routes.serve('/w.pth', GOOD)
    with pytest.raises(DownloadError, match='RTMO_HOME'):
        download.download(f'{base}/w.pth', blocked_home(tmp_path) / 'w.pth', progress=False)


def test_read_only_cache_that_holds_the_model_still_works(server, tmp_path, monkeypatch,
                                                          caplog):
    routes, base = server
    routes.serve('/ro.pth', GOOD)
    path = download.fetch_checkpoint(f'{base}/ro.pth', None, tmp_path, progress=False)

    def no_writes(*args, **kwargs):
        raise PermissionError(30, 'Read-only file system')

    monkeypatch.setattr(download, 'cache_lock', no_writes)  # a cached model takes no lock
    assert download.fetch_checkpoint(f'{base}/ro.pth', None, tmp_path) == path
    download.pin_path(path).unlink()  # cached before pins existed, and now read-only
    monkeypatch.setattr(download, 'atomic_write', no_writes)
    assert download.fetch_checkpoint(f'{base}/ro.pth', None, tmp_path) == path
    assert 'will not be pinned' in caplog.text
