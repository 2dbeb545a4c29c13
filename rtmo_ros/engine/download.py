"""Download zoo models into the model cache: verified, pinned, atomic and race-free.

Cache folder: ``$RTMO_HOME``, else ``$XDG_CACHE_HOME/rtmo_ros``, else ``~/.cache/rtmo_ros``.
Checkpoints go to ``checkpoints/``, ONNX zips are unpacked into ``onnx/<zip name>/``.

- Transport: https only, redirects included; plain http only to loopback hosts (local test
  servers) and ``file://`` for a local copy. The byte count must equal Content-Length.
- Atomic: a download goes to ``.<name>.<random>.part`` next to its target, is hashed while it
  arrives, verified, and only then renamed into place (``os.replace``); a zip is unpacked into
  ``.<stem>.unzip.<random>/`` and renamed likewise. A half-written file never carries the
  final name.
- Pinned (trust on first use): no full sha256 of the official files is published (see
  ``zoo``), so the full sha256 of the first verified download is written next to the file,
  ``<file>.sha256`` in ``sha256sum`` format, and every later resolve (cached file or new
  download) must match it. Zips: ``onnx/<stem>.zip.sha256`` pins the zip (which is deleted
  after unpacking) and ``<unpacked .onnx>.sha256`` the graph.
- Zips are checked before unpacking: no absolute or ``..`` member names, at most
  ``MAX_UNZIPPED_BYTES`` in total.
- Race-free: fetching holds ``fcntl.flock`` on ``<target>.lock`` in the cache folder, so two
  processes fetching one model download it once; the second waits and finds it verified.
  Leftover temporaries of that target (a killed process) are removed under the lock, any
  other untouched for ``STALE_SECONDS``.
"""
import contextlib
import fcntl
import hashlib
import http.client
import ipaddress
import logging
import os
import pathlib
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

LOG = logging.getLogger(__name__)
CHUNK = 1 << 20
# the largest official zip (rtmo-l) unpacks to about 0.2 GB; 2 GiB leaves room and stops bombs
MAX_UNZIPPED_BYTES = 2 << 30
STALE_SECONDS = 3600  # a temporary file untouched this long belongs to a dead process


class DownloadError(RuntimeError):
    """A model could not be fetched (offline, HTTP error, unsafe URL, unwritable cache...)."""


class ChecksumError(ValueError):
    """A file's sha256 is not the expected one."""


class UnsafeArchiveError(ChecksumError):
    """A zip with member paths outside its folder or too large unpacked (zip slip / bomb)."""


def models_home():
    """Return the model cache folder (not created)."""
    if os.environ.get('RTMO_HOME'):
        return pathlib.Path(os.environ['RTMO_HOME']).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache'
    return pathlib.Path(xdg).expanduser() / 'rtmo_ros'


def sha256_of(path):
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_digest(digest, expected, what):
    """Raise ChecksumError unless hex ``digest`` starts with ``expected`` (full or prefix)."""
    if expected and not digest.startswith(expected.lower()):
        raise ChecksumError(f'{what} has sha256 {digest[:16]}..., expected {expected}...: the '
                            'file is corrupt or not the official one; delete it and retry')


def atomic_write(path, data):
    """Write bytes to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- pins: the full sha256 recorded at first use ---------------------------------------------

def pin_path(path):
    """The ``<file>.sha256`` pin of a cached file."""
    path = pathlib.Path(path)
    return path.with_name(path.name + '.sha256')


def read_pin(path):
    """Return the pinned full sha256 of ``path``, or None when none was recorded."""
    pin = pin_path(path)
    try:
        text = pin.read_text()
    except FileNotFoundError:
        return None
    match = re.match(r'([0-9a-f]{64})\s', text)
    if not match:
        raise ChecksumError(f'{pin} is not a sha256 pin; delete it and {path.name}, and retry')
    return match.group(1)


def write_pin(path, digest):
    """Record ``digest`` as the full sha256 of ``path`` (``sha256sum -c`` format)."""
    path = pathlib.Path(path)
    atomic_write(pin_path(path), f'{digest}  {path.name}\n'.encode())


def check_pinned(path, digest, pinned):
    """Raise ChecksumError unless ``digest`` equals the pinned full sha256."""
    if digest != pinned:
        raise ChecksumError(
            f'{path} has sha256 {digest}, but its first verified download had {pinned} '
            f'(recorded in {pin_path(path)}): the file changed since (corrupt disk or '
            f'tampering); delete {path} to download it again')


def verify_cached(path, prefix=None, sha256=None):
    """Check a cached file against ``prefix``, then ``sha256`` or its pin; return ``path``.

    A file verified for the first time gets its pin (skipped, with a warning, when the cache
    is read-only).
    """
    digest = sha256_of(path)
    check_digest(digest, prefix, str(path))
    check_digest(digest, sha256, str(path))
    pinned = read_pin(path)
    if pinned:
        check_pinned(path, digest, pinned)
        return path
    try:
        write_pin(path, digest)
    except OSError as err:
        LOG.warning('rtmo: could not record the sha256 of %s (%s): it will not be pinned',
                    path, err)
    return path


# --- transport -------------------------------------------------------------------------------

def is_loopback(host):
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host in ('localhost', 'localhost.'):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url, redirect=False):
    """Raise DownloadError unless ``url`` is https, http to a loopback host, or a local file.

    ``file://`` is refused as a redirect target.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == 'https' or (parts.scheme == 'file' and not redirect):
        return
    if parts.scheme == 'http' and is_loopback(parts.hostname or ''):
        return
    how = 'redirected to' if redirect else 'asked for'
    raise DownloadError(f'refusing to download from {url} ({how} an insecure or unsupported '
                        'URL): models are fetched over https only (plain http to localhost '
                        'only)')


class SecureRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL that ``check_url`` accepts."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        """Refuse (DownloadError) a redirect to http, ftp, file... else redirect as usual."""
        try:
            check_url(newurl, redirect=True)
        except DownloadError:
            fp.close()
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _unreachable(url, err):
    reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, 'reason', err)
    return DownloadError(
        f'could not download {url} ({reason}); if this machine is offline, fetch that file '
        'elsewhere and pass the local file instead, e.g. PoseEstimator("/path/to/model.onnx")'
        ' or rtmo-pose --model /path/to/model.onnx (the bundled offline model is '
        'rtmo-tiny-synthetic)')


def open_url(url, timeout=30):
    """Open ``url`` after ``check_url``, following only secure redirects."""
    check_url(url)
    opener = urllib.request.build_opener(SecureRedirectHandler)
    request = urllib.request.Request(url, headers={'User-Agent': 'rtmo_ros'})
    try:
        return opener.open(request, timeout=timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _unreachable(url, err) from None


def _chunks(url, response):
    """Yield the body; DownloadError on a failed read or fewer bytes than Content-Length."""
    length = response.headers.get('Content-Length')
    received = 0
    try:
        for chunk in iter(lambda: response.read(CHUNK), b''):
            received += len(chunk)
            yield chunk
    except (OSError, http.client.HTTPException) as err:
        raise _unreachable(url, err) from None
    if length is not None and received != int(length):
        raise DownloadError(f'the download of {url} was truncated: {received} of {length} '
                            'bytes arrived before the connection closed; nothing was kept, '
                            'run again to retry')


def _progress(total, name, enabled):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit='B', unit_scale=True, desc=name, disable=not enabled)


def _copy_url(url, out, name, progress, timeout):
    """Stream ``url`` into the open file ``out``; return the sha256 hex digest."""
    digest = hashlib.sha256()
    with open_url(url, timeout) as response:
        total = int(response.headers.get('Content-Length') or 0) or None
        bar = _progress(total, name, progress)
        try:
            for chunk in _chunks(url, response):
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return digest.hexdigest()


# --- the cache folder ------------------------------------------------------------------------

@contextlib.contextmanager
def writable_cache(folder):
    """Turn an OSError while writing into ``folder`` into a DownloadError naming the fix."""
    try:
        yield
    except OSError as err:
        raise DownloadError(
            f'cannot write to the model cache {folder} ({err}): set RTMO_HOME to a writable '
            'folder with free space, or pass a local model file') from None


def _is_temporary(name):
    return name.endswith('.part') or '.unzip.' in name


def remove_stale(folder, name):
    """Remove ``name``'s temporaries (caller holds its lock) and others idle STALE_SECONDS."""
    now = time.time()
    for path in pathlib.Path(folder).glob('.*'):
        if not _is_temporary(path.name):
            continue
        try:
            mine = path.name.startswith(f'.{name}.')
            if mine or now - path.lstat().st_mtime > STALE_SECONDS:
                LOG.info('rtmo: removing leftover temporary %s', path)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        except FileNotFoundError:
            pass  # removed by another process meanwhile


@contextlib.contextmanager
def cache_lock(folder, name):
    """Hold an exclusive ``flock`` on ``folder/<name>.lock`` (waiting for another holder).

    The lock files stay (removing one would race with a waiter). Stale temporaries are
    removed once the lock is held.
    """
    folder = pathlib.Path(folder)
    with writable_cache(folder):
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f'{name}.lock', 'ab')
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            LOG.info('rtmo: waiting for another process fetching %s', name)
            fcntl.flock(lock, fcntl.LOCK_EX)
        with writable_cache(folder):
            remove_stale(folder, name)
        yield  # closing the file releases the lock


# --- downloads -------------------------------------------------------------------------------

def fetch_to(url, dest, sha256=None, progress=True, timeout=30):
    """Fetch ``url`` into ``dest`` atomically; return its full sha256 hex digest.

    ``sha256``: expected hex digest or prefix (None: not checked). DownloadError when the URL
    cannot be read, is insecure, arrives truncated or the folder is not writable;
    ChecksumError on a mismatch. On any error ``dest`` is untouched and no temporary is left.
    """
    dest = pathlib.Path(dest)
    with writable_cache(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f'.{dest.name}.', suffix='.part')
    try:
        with os.fdopen(fd, 'wb') as out, writable_cache(dest.parent):
            digest = _copy_url(url, out, dest.name, progress, timeout)
            out.flush()
            os.fsync(out.fileno())
        check_digest(digest, sha256, f'{url} (downloaded)')
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digest


def download(url, dest, sha256=None, progress=True, timeout=30):
    """Fetch ``url`` into ``dest`` atomically and return ``dest`` (a Path); see ``fetch_to``."""
    fetch_to(url, dest, sha256, progress, timeout)
    return pathlib.Path(dest)


# --- zips ------------------------------------------------------------------------------------

def check_members(archive, zip_path, max_bytes):
    """Refuse (UnsafeArchiveError) member paths leaving the folder or too much unpacked.

    The declared sizes are binding: ``zipfile`` stops reading a member at its declared size
    (and fails its CRC), so summing them bounds what extraction writes.
    """
    total = 0
    for info in archive.infolist():
        parts = pathlib.PurePosixPath(info.filename.replace('\\', '/')).parts
        if not parts or parts[0] == '/' or '..' in parts or ':' in parts[0]:
            raise UnsafeArchiveError(f'{zip_path}: member {info.filename!r} points outside '
                                     'the folder (zip slip); not unpacking it')
        total += info.file_size
        if total > max_bytes:
            raise UnsafeArchiveError(
                f'{zip_path} unpacks to more than {max_bytes} bytes (at member '
                f'{info.filename!r}, {info.file_size} bytes); not unpacking it (zip bomb?)')


def unzip(zip_path, out, max_bytes):
    """Check then extract ``zip_path`` into the folder ``out``."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            check_members(archive, zip_path, max_bytes)
            archive.extractall(out)  # verifies each member's CRC as it reads
    except zipfile.BadZipFile as err:
        raise ChecksumError(f'{zip_path} is not a valid zip ({err}); delete it and download '
                            'it again') from None


def extract_onnx(zip_path, dest_dir, max_bytes=None):
    """Unpack an onnx_sdk zip into ``dest_dir`` (atomically) and return its ``.onnx`` file.

    The graph's sha256 is pinned (``<graph>.sha256``) in the same move. ``max_bytes``:
    unpacked size limit, default ``MAX_UNZIPPED_BYTES``.
    """
    zip_path, dest_dir = pathlib.Path(zip_path), pathlib.Path(dest_dir)
    with writable_cache(dest_dir.parent):
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(dir=dest_dir.parent,
                                            prefix=f'.{dest_dir.name}.unzip.'))
    try:
        with writable_cache(dest_dir.parent):
            unzip(zip_path, tmp, max_bytes or MAX_UNZIPPED_BYTES)
        found = sorted(tmp.rglob('*.onnx'))
        if not found:
            raise ValueError(f'{zip_path} contains no .onnx file')
        with writable_cache(dest_dir.parent):
            write_pin(found[0], sha256_of(found[0]))
            shutil.rmtree(dest_dir, ignore_errors=True)
            os.replace(tmp, dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir / found[0].relative_to(tmp)


# --- zoo entries -----------------------------------------------------------------------------

def fetch_entry(entry, prefer_checkpoint=False, home=None, progress=True):
    """Return a local file for a :class:`~rtmo_ros.engine.zoo.ZooEntry`, downloading if needed.

    The ONNX graph when the zoo has one (unless ``prefer_checkpoint``), else the checkpoint.
    """
    home = pathlib.Path(home) if home else models_home()
    if entry.onnx_url and not prefer_checkpoint:
        return fetch_onnx_zip(entry.onnx_url, home / 'onnx', progress,
                              sha256=entry.onnx_zip_sha256)
    return fetch_checkpoint(entry.checkpoint_url, entry.checkpoint_sha256_prefix,
                            home / 'checkpoints', progress, sha256=entry.checkpoint_sha256)


def fetch_checkpoint(url, sha256_prefix, folder, progress=True, sha256=None):
    """Download a checkpoint unless cached; verify it by prefix and full sha256 (or pin).

    ``sha256``: the known full hash (None: the pin of the first download is used).
    """
    path = pathlib.Path(folder) / url.rsplit('/', 1)[-1]
    if path.exists():  # no lock needed to read: files appear whole (read-only caches work)
        return verify_cached(path, sha256_prefix, sha256)
    with cache_lock(folder, path.name):
        if path.exists():  # another process fetched it while we waited
            return verify_cached(path, sha256_prefix, sha256)
        # a pin (or known hash) is stricter than the prefix it was checked against
        digest = fetch_to(url, path, sha256 or read_pin(path) or sha256_prefix, progress)
        with writable_cache(folder):
            write_pin(path, digest)
    return path


def _unpacked_onnx(unpacked):
    found = sorted(unpacked.rglob('*.onnx')) if unpacked.is_dir() else []
    return found[0] if found else None


def fetch_onnx_zip(url, folder, progress=True, sha256=None):
    """Download and unpack an onnx_sdk zip unless already unpacked; return the .onnx path.

    The zip is checked against ``sha256`` (the known full hash) or its pin, the unpacked graph
    against its own pin, also when cached.
    """
    folder = pathlib.Path(folder)
    stem = url.rsplit('/', 1)[-1].rsplit('.', 1)[0]
    unpacked = folder / stem
    cached = _unpacked_onnx(unpacked)
    if cached:  # no lock needed to read (see fetch_checkpoint)
        return verify_cached(cached)
    with cache_lock(folder, stem):
        cached = _unpacked_onnx(unpacked)
        if cached:
            return verify_cached(cached)
        zip_path = folder / f'{stem}.zip'
        try:
            digest = fetch_to(url, zip_path, sha256 or read_pin(zip_path), progress)
            onnx_path = extract_onnx(zip_path, unpacked)
            with writable_cache(folder):
                write_pin(zip_path, digest)
        finally:
            zip_path.unlink(missing_ok=True)
    return onnx_path
