"""On-disk cache of TensorRT engines built from ONNX graphs (no TensorRT needed here).

A serialized engine only runs on the TensorRT version and GPU model it was built for, with
the precision and input shapes it was built with. Each engine ``<stem>-<key hash>.engine``
therefore has a JSON sidecar holding the full key and the engine's own sha256:

    {"format": 1, "key": {onnx_sha256, tensorrt, gpu, compute_capability, precision,
                          input_shape}, "engine_sha256": "..."}

``lookup`` returns an engine only when the sidecar parses, its key equals the wanted key and
the engine file's sha256 matches; anything else (stale, corrupt, truncated, mismatched) is a
miss and the caller rebuilds. ``store`` writes the engine, then the sidecar, each to a
temporary file renamed into place, so a crash never leaves a sidecar vouching for a partial
engine. ``try_store`` is ``store`` for a cache that may be read-only: a failure is a warning.
"""
import hashlib
import json
import logging
import pathlib

from .download import atomic_write, models_home, sha256_of

LOG = logging.getLogger(__name__)
FORMAT = 1


def default_cache_dir():
    """``<model cache>/engines`` (see ``download.models_home``)."""
    return models_home() / 'engines'


def writable_subfolder(cache_dir, name, consequence, level=logging.WARNING):
    """``<cache_dir or the default cache>/<name>``, created and written to once; None, logged
    at ``level`` with ``consequence``, when it cannot be (a read-only install)."""
    folder = pathlib.Path(cache_dir or default_cache_dir()) / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / '.write-test'
        probe.write_bytes(b'')
        probe.unlink()
    except OSError as err:
        LOG.log(level, 'rtmo: %s is not writable (%s): %s', folder, err, consequence)
        return None
    return folder


def make_key(onnx_sha256, tensorrt_version, gpu_name, compute_capability, precision,
             input_shape):
    """Return the cache key dict; ``input_shape`` is the (min, opt, max) profile or a shape."""
    return {'onnx_sha256': onnx_sha256, 'tensorrt': str(tensorrt_version),
            'gpu': str(gpu_name), 'compute_capability': '%d.%d' % tuple(compute_capability),
            'precision': precision, 'input_shape': json.loads(json.dumps(input_shape))}


def key_digest(key):
    """A short stable hash of a key (sorted-key JSON)."""
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EngineCache:
    """Engines in ``folder`` (default ``default_cache_dir()``) keyed as described above."""

    def __init__(self, folder=None):
        self.folder = pathlib.Path(folder) if folder else default_cache_dir()

    def paths(self, stem, key):
        """Return (engine path, sidecar path) for an ONNX file stem and a key."""
        base = f'{stem}-{key_digest(key)}'
        return self.folder / f'{base}.engine', self.folder / f'{base}.json'

    def lookup(self, stem, key):
        """Return the cached engine's path, or None (with the reason logged) on any miss."""
        engine, sidecar = self.paths(stem, key)
        reason = self._miss_reason(engine, sidecar, key)
        if reason:
            LOG.info('rtmo: no usable cached TensorRT engine (%s): building one', reason)
            return None
        return engine

    def _miss_reason(self, engine, sidecar, key):
        if not engine.exists() or not sidecar.exists():
            return f'{engine.name} not cached yet'
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as err:
            return f'sidecar {sidecar.name} unreadable: {err}'
        if not isinstance(meta, dict) or meta.get('format') != FORMAT:
            return f'sidecar {sidecar.name} has an unknown format'
        if meta.get('key') != key:
            return f'{engine.name} was built for another setup'
        if meta.get('engine_sha256') != sha256_of(engine):
            return f'{engine.name} does not match its recorded sha256 (corrupt or truncated)'
        return None

    def store(self, stem, key, engine_bytes):
        """Write an engine and its sidecar atomically; return the engine path."""
        engine, sidecar = self.paths(stem, key)
        data = bytes(engine_bytes)
        atomic_write(engine, data)
        meta = {'format': FORMAT, 'key': key,
                'engine_sha256': hashlib.sha256(data).hexdigest()}
        atomic_write(sidecar, json.dumps(meta, indent=1, sort_keys=True).encode())
        return engine

    def try_store(self, stem, key, engine_bytes):
        """``store``, but a cache that cannot be written (read-only, full) only logs a warning.

        Returns the engine path, or None when it was not stored: the caller runs the engine
        from the bytes it has and builds it again next time.
        """
        try:
            return self.store(stem, key, engine_bytes)
        except OSError as err:
            LOG.warning('rtmo: could not write the TensorRT engine to the cache %s (%s): '
                        'running it from memory; it will be built again next time (set '
                        'cache_dir or RTMO_HOME to a writable folder)', self.folder, err)
            return None

    def discard(self, stem, key):
        """Remove an engine (and its sidecar) that failed to deserialize (best effort)."""
        for path in self.paths(stem, key):
            try:
                path.unlink(missing_ok=True)
            except OSError as err:  # read-only cache: the rebuilt engine is not stored either
                LOG.warning('rtmo: could not remove %s (%s)', path, err)

    def timing_cache_path(self, tensorrt_version, gpu_name, compute_capability):
        """Where the TensorRT timing cache of one TensorRT version and GPU model lives.

        The timing cache holds measured kernel timings: any later build on the same GPU and
        TensorRT (another model, precision or batch profile) reuses them and builds faster.
        """
        gpu = ''.join(c if c.isalnum() else '-' for c in gpu_name)
        sm = ''.join(str(v) for v in compute_capability)
        return self.folder / f'timing-trt{tensorrt_version}-{gpu}-sm{sm}.cache'

