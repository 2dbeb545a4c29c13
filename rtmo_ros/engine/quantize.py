"""Static int8 (QDQ) quantization of RTMO ONNX graphs for ONNX Runtime on CPU.

What is quantized: the backbone, the neck (its transformer encoder included) and the head's
conv branches, i.e. every node that is a Conv or feeds one (ONNX Runtime quantizes the op
types it has int8 kernels for: Conv, MatMul, Gemm, Add, Mul, Concat, MaxPool, Resize, ...).
Everything after the last convolutions stays float: the DCC (the GAU and the x/y bin
classifiers), box and keypoint decoding, NMS and TopK, where 8 bits would move keypoints by
whole bins. Weights are int8 per output channel, activations uint8 per tensor (U8S8, the
fast kernel pair on x86), ranges from MinMax calibration.

Measured (benchmarks/bench_int8.py, RTMO-s at 640, 2 threads, AVX-512 VNNI CPU): quantizing
only Conv/MatMul/Gemm gave 1.66x, adding Add/Concat/MaxPool/Resize 1.63x, the whole conv
region 1.82x at the same keypoint drift (median 0.5 px on the bundled model). ONNX Runtime's
``quant_pre_process`` is not run: its symbolic shape inference fails on mmdeploy's graph and,
with it skipped, the int8 graph was no faster.

Calibration feeds images through the engine's own letterbox (``preprocess.letterbox_image``),
so the int8 graph sees exactly the inputs the fp32 graph sees at run time. ``int8_path`` makes
and caches the int8 graph of an fp32 graph from rendered synthetic people; ``rtmo-quantize``
calibrates on the user's own images instead.
"""
import argparse
import atexit
import hashlib
import json
import logging
import pathlib
import shutil
import sys
import tempfile

from .download import atomic_write, sha256_of
from .preprocess import letterbox_image

LOG = logging.getLogger(__name__)
FORMAT = 1  # part of the cache key: raise it when the quantization recipe changes
# Images rendered by rtmo_train.data.synthetic: seeds 0..n-1, first frame of each sequence.
SYNTHETIC_SET = 'synthetic-people-v1'
DEFAULT_NUM_IMAGES = 64


class _LetterboxReader:
    """A CalibrationDataReader over BGR images, letterboxed to the graph input (1, 3, H, W)."""

    def __init__(self, input_name, input_wh, images):
        self.input_name, self.input_wh = input_name, input_wh
        self._images = iter(images)

    def get_next(self):
        image = next(self._images, None)
        if image is None:
            return None
        batch = letterbox_image(image, self.input_wh)[0][None]
        return {self.input_name: batch}

    def rewind(self):  # ORT >= 1.17 may call it; one pass is all MinMax needs
        pass


def graph_input(model):
    """Return (input name, (W, H)) of an RTMO graph (an onnx.ModelProto)."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not dims[2] or not dims[3]:
        raise ValueError(f'the ONNX input has no fixed spatial size ({dims}); quantize a graph '
                         'exported at a fixed size')
    return inputs[0].name, (dims[3], dims[2])


def conv_region_nodes(model):
    """Names of the nodes that are a Conv or feed one (backbone, neck, head convolutions);
    the float tail after the head's last convolutions (DCC, decoding, NMS) is left out."""
    producer = {out: node for node in model.graph.node for out in node.output}
    region, stack = set(), [n for n in model.graph.node if n.op_type == 'Conv']
    while stack:
        node = stack.pop()
        if node.name in region:
            continue
        region.add(node.name)
        stack.extend(producer[i] for i in node.input if i in producer)
    return [n.name for n in model.graph.node if n.name in region]


def _named(model):
    """Give every unnamed node a unique name (node selection goes by name)."""
    seen = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f'{node.op_type}_rtmo_{index}'
        seen.add(node.name)
    return model


def quantize_model(fp32_path, out_path, images, num_images=DEFAULT_NUM_IMAGES):
    """Write the int8 QDQ graph of ``fp32_path`` to ``out_path``, calibrated on ``images``.

    ``images``: an iterable of (H, W, 3) uint8 BGR arrays (any size; each is letterboxed as
    at run time); the first ``num_images`` are used. Returns ``out_path``.
    """
    import onnx
    from onnxruntime import quantization as q

    model = onnx.load(str(fp32_path))
    input_name, input_wh = graph_input(model)
    chosen = [image for _, image in zip(range(num_images), images)]
    if not chosen:
        raise ValueError('no calibration images: give at least one')
    with tempfile.TemporaryDirectory(prefix='rtmo-quant-') as tmp:
        staged = pathlib.Path(tmp) / 'fp32.onnx'
        opset = max(o.version for o in model.opset_import if o.domain in ('', 'ai.onnx'))
        if opset < 13:  # per-channel QDQ needs opset 13 (mmdeploy exports opset 11)
            model = onnx.version_converter.convert_version(model, 13)
        onnx.save(_named(model), str(staged))
        q.quantize_static(
            str(staged), str(pathlib.Path(tmp) / 'int8.onnx'),
            _LetterboxReader(input_name, input_wh, chosen), quant_format=q.QuantFormat.QDQ,
            per_channel=True, activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8, nodes_to_quantize=conv_region_nodes(model),
            calibrate_method=q.CalibrationMethod.MinMax)
        atomic_write(out_path, (pathlib.Path(tmp) / 'int8.onnx').read_bytes())
    return pathlib.Path(out_path)


# --- the cached int8 graph of an fp32 graph ------------------------------------------------

def synthetic_images(input_wh, count, first_seed=0):
    """Yield ``count`` rendered frames of synthetic people at ``input_wh`` (W, H), seeded."""
    from rtmo_train.data.synthetic import render_sequence

    for seed in range(first_seed, first_seed + count):
        yield next(render_sequence(seed, 1, input_wh[0], input_wh[1]))[0]


def cache_key(fp32_sha256, num_images):
    """The cache key of an int8 graph: fp32 graph, ONNX Runtime version, calibration set."""
    import onnxruntime

    return {'onnx_sha256': fp32_sha256, 'onnxruntime': onnxruntime.__version__,
            'calibration': f'{SYNTHETIC_SET}-n{num_images}', 'format': FORMAT}


def _key_digest(key):
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _cached(graph, sidecar, key):
    """True when ``graph`` and its sidecar exist, the key matches and the sha256 does."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get('key') == key and graph.is_file()
            and meta.get('int8_sha256') == sha256_of(graph))


def int8_path(fp32_path, cache_dir=None, num_images=DEFAULT_NUM_IMAGES):
    """Return the path of the int8 graph of ``fp32_path``, calibrating it on first use.

    Cached in ``cache_dir`` (default ``engine_cache.default_cache_dir()``) as
    ``<stem>-<key hash>.int8.onnx`` plus a JSON sidecar (key and sha256), both written
    atomically. A cache that cannot be written only logs a warning: the graph is then made in
    a temporary folder (and made again next time).
    """
    from .engine_cache import default_cache_dir

    fp32_path = pathlib.Path(fp32_path)
    folder = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(sha256_of(fp32_path), num_images)
    base = f'{fp32_path.stem}-{_key_digest(key)}'
    graph, sidecar = folder / f'{base}.int8.onnx', folder / f'{base}.int8.json'
    if _cached(graph, sidecar, key):
        return graph
    import onnx

    input_wh = graph_input(onnx.load(str(fp32_path), load_external_data=False))[1]
    LOG.info('rtmo: calibrating the int8 graph of %s on %d synthetic images (once)',
             fp32_path.name, num_images)
    try:
        quantize_model(fp32_path, graph, synthetic_images(input_wh, num_images), num_images)
        meta = {'format': FORMAT, 'key': key, 'int8_sha256': sha256_of(graph)}
        atomic_write(sidecar, json.dumps(meta, indent=1, sort_keys=True).encode())
        return graph
    except OSError as err:
        LOG.warning('rtmo: could not write the int8 graph to the cache %s (%s): using a '
                    'temporary copy; it will be calibrated again next time (set cache_dir or '
                    'RTMO_HOME to a writable folder)', folder, err)
    folder = tempfile.mkdtemp(prefix='rtmo-int8-')
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # not left behind in /tmp
    return quantize_model(fp32_path, pathlib.Path(folder) / f'{base}.int8.onnx',
                          synthetic_images(input_wh, num_images), num_images)


# --- rtmo-quantize ---------------------------------------------------------------------------

def folder_images(folder):
    """Yield the BGR images (jpg/png/...) of a folder, sorted by name; unreadable ones fail."""
    import cv2

    from .cli import IMAGE_SUFFIXES

    files = sorted(p for p in pathlib.Path(folder).iterdir() if p.suffix.lower() in
                   IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f'no images (jpg, png, ...) in {folder}')
    for path in files:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f'cannot read image {path}')
        yield image


def main(argv=None):
    """Entry point of ``rtmo-quantize``; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog='rtmo-quantize',
        description='Write the int8 (QDQ) graph of an RTMO ONNX model, calibrated on your '
                    'images, for ONNX Runtime on CPU.')
    parser.add_argument('model', type=pathlib.Path, help='fp32 .onnx graph')
    parser.add_argument('--images', type=pathlib.Path, required=True,
                        help='folder of calibration images (jpg/png), like your camera\'s')
    parser.add_argument('--out', type=pathlib.Path,
                        help='int8 graph to write (default <model stem>.int8.onnx)')
    parser.add_argument('--num-images', type=int, default=DEFAULT_NUM_IMAGES,
                        help='use at most this many images (default %(default)s)')
    args = parser.parse_args(argv)
    out = args.out or args.model.with_name(f'{args.model.stem}.int8.onnx')
    if not args.model.is_file() or not args.images.is_dir():
        print(f'rtmo-quantize: error: need an existing model file and image folder, got '
              f'{args.model} and {args.images}', file=sys.stderr)
        return 2
    try:
        quantize_model(args.model, out, folder_images(args.images), args.num_images)
    except (OSError, ValueError) as err:
        print(f'rtmo-quantize: error: {err}', file=sys.stderr)
        return 1
    print(f'rtmo-quantize: wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
