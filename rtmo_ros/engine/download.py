"""Download zoo models into the model cache, verified, with atomic writes.

Cache folder: ``$RTMO_HOME``, else ``$XDG_CACHE_HOME/rtmo_ros``, else ``~/.cache/rtmo_ros``.
Checkpoints go to ``checkpoints/``, ONNX zips are unpacked into ``onnx/<zip name>/``.
A download is written to a temporary file next to its target, hashed while it arrives,
verified, and only then renamed into place (``os.replace``), so a half-written or corrupt
file never carries the final name.
"""
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A model could not be fetched (offline, HTTP error...)."""


class ChecksumError(ValueError):
    """A file's sha256 is not the expected one."""


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


def _progress(total, name, enabled):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit='B', unit_scale=True, desc=name, disable=not enabled)


def download(url, dest, sha256=None, progress=True, timeout=30):
    """Fetch ``url`` into ``dest`` atomically and return ``dest`` (a Path).

    ``sha256`` is the expected hex digest or a prefix of it (None: not checked). Raises
    DownloadError when the URL cannot be read and ChecksumError on a mismatch; in both cases
    ``dest`` is left untouched.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f'.{dest.name}.', suffix='.part')
    try:
        with os.fdopen(fd, 'wb') as out:
            digest = _copy_url(url, out, dest.name, progress, timeout)
            out.flush()
            os.fsync(out.fileno())
        check_digest(digest, sha256, f'{url} (downloaded)')
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _copy_url(url, out, name, progress, timeout):
    """Stream ``url`` into the open file ``out``; return the sha256 hex digest."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={'User-Agent': 'rtmo_ros'})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = int(response.headers.get('Content-Length') or 0) or None
            bar = _progress(total, name, progress)
            for chunk in iter(lambda: response.read(CHUNK), b''):
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except (urllib.error.URLError, OSError) as err:
        reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, 'reason', err)
        raise DownloadError(
            f'could not download {url} ({reason}); if this machine is offline, fetch that file '
            'elsewhere and pass the local file instead, e.g. PoseEstimator("/path/to/model.onnx")'
            ' or rtmo-pose --model /path/to/model.onnx (the bundled offline model is '
            'rtmo-tiny-synthetic)') from None
    return digest.hexdigest()


def extract_onnx(zip_path, dest_dir):
    """Unpack an onnx_sdk zip into ``dest_dir`` (atomically) and return its ``.onnx`` file."""
    zip_path, dest_dir = pathlib.Path(zip_path), pathlib.Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            broken = archive.testzip()
            if broken is not None:
                raise ChecksumError(f'{zip_path}: member {broken} fails its CRC check; delete '
                                    'the zip and download it again')
            tmp = pathlib.Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix='.unzip.'))
            archive.extractall(tmp)
    except zipfile.BadZipFile as err:
        raise ChecksumError(f'{zip_path} is not a valid zip ({err}); delete it and download '
                            'it again') from None
    try:
        found = sorted(tmp.rglob('*.onnx'))
        if not found:
            raise ValueError(f'{zip_path} contains no .onnx file')
        shutil.rmtree(dest_dir, ignore_errors=True)
        os.replace(tmp, dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_dir / found[0].relative_to(tmp)


def fetch_entry(entry, prefer_checkpoint=False, home=None, progress=True):
    """Return a local file for a :class:`~rtmo_ros.engine.zoo.ZooEntry`, downloading if needed.

    The ONNX graph when the zoo has one (unless ``prefer_checkpoint``), else the checkpoint.
    """
    home = pathlib.Path(home) if home else models_home()
    if entry.onnx_url and not prefer_checkpoint:
        return fetch_onnx_zip(entry.onnx_url, home / 'onnx', progress)
    return fetch_checkpoint(entry.checkpoint_url, entry.checkpoint_sha256_prefix,
                            home / 'checkpoints', progress)


def fetch_checkpoint(url, sha256_prefix, folder, progress=True):
    """Download a checkpoint unless cached; verify it by its sha256 prefix either way."""
    path = pathlib.Path(folder) / url.rsplit('/', 1)[-1]
    if path.exists():
        check_digest(sha256_of(path), sha256_prefix, str(path))
        return path
    return download(url, path, sha256=sha256_prefix, progress=progress)


def fetch_onnx_zip(url, folder, progress=True):
    """Download and unpack an onnx_sdk zip unless already unpacked; return the .onnx path."""
    folder = pathlib.Path(folder)
    stem = url.rsplit('/', 1)[-1].rsplit('.', 1)[0]
    unpacked = folder / stem
    found = sorted(unpacked.rglob('*.onnx')) if unpacked.is_dir() else []
    if found:
        return found[0]
    zip_path = download(url, folder / f'{stem}.zip', progress=progress)
    onnx_path = extract_onnx(zip_path, unpacked)
    zip_path.unlink()
    return onnx_path
