"""The RTMO models of the mmpose model zoo, with their official download URLs.

Source: mmpose ``projects/rtmo/README.md`` and ``configs/body_2d_keypoint/rtmo/*/rtmo_*.yml``
(mmpose 1.3.2). OpenMMLab publishes an ``onnx_sdk`` zip (mmdeploy export: ``end2end.onnx``
plus SDK json files) only for the four body7 models; for the others export an ONNX graph
from the checkpoint with ``rtmo-export`` or run the checkpoint with ``backend='torch'``.

Integrity: OpenMMLab checkpoint names end in ``-<8 hex>_<date>.pth`` where the 8 hex digits
are the start of the file's sha256 (mmengine ``publish_model``). No full sha256 is published
for any file, so ``ZooEntry.checkpoint_sha256`` and ``onnx_zip_sha256`` are None here (fill
them in where a full hash becomes known; a download must then match it). Until then
``download`` pins on first use: the full sha256 of the first verified download is recorded
next to the file and every later resolve must match it. The zip names reuse the checkpoint's
prefix, which is not the zip's own hash: a first zip download is checked by its CRCs and its
member names and sizes (see ``download``), and the graph must then load in the backend.
"""
from dataclasses import dataclass
import os
import pathlib
import re

OFFICIAL_BASE = 'https://download.openmmlab.com/mmpose/v1/projects/rtmo/'
# A fleet without internet access can serve the official files from its own server, laid out
# like OFFICIAL_BASE: RTMO_ZOO_MIRROR=https://models.example.lan/rtmo/ (read at import). The
# files are verified exactly as when fetched from OpenMMLab (https only, hash checks).
BASE = (os.environ.get('RTMO_ZOO_MIRROR', '').rstrip('/') + '/'
        if os.environ.get('RTMO_ZOO_MIRROR') else OFFICIAL_BASE)


@dataclass(frozen=True)
class ZooEntry:
    """One official RTMO model.

    ``input_size`` is (W, H) in pixels; ``dataset`` the training set; ``keypoints`` K with
    the layout of ``skeleton.py`` (17: COCO, 14: CrowdPose); ``onnx_url`` None when OpenMMLab
    published no ONNX for it. ``checkpoint_sha256`` / ``onnx_zip_sha256``: full hex sha256 of
    the official files where known (none is published: None, see the module docstring).
    """

    name: str
    config: str
    variant: str
    dataset: str
    keypoints: int
    input_size: tuple
    checkpoint_url: str
    onnx_url: str = None
    checkpoint_sha256: str = None
    onnx_zip_sha256: str = None

    @property
    def checkpoint_sha256_prefix(self):
        """First 8 hex digits of the checkpoint's sha256, read from its official file name."""
        return re.search(r'-([0-9a-f]{8})_\d{8}\.pth$', self.checkpoint_url).group(1)


def _entry(name, config, hash_date, keypoints=17, size=640, onnx=False, prefix=''):
    variant = name.split('-')[1]
    dataset = name.split('-', 2)[2]
    stem = f'{config}-{hash_date}'
    return ZooEntry(name=name, config=config, variant=variant, dataset=dataset,
                    keypoints=keypoints, input_size=(size, size),
                    checkpoint_url=f'{BASE}{prefix}{stem}.pth',
                    onnx_url=f'{BASE}onnx_sdk/{stem}.zip' if onnx else None)


ZOO = {e.name: e for e in (
    _entry('rtmo-t-body7', 'rtmo-t_8xb32-600e_body7-416x416', 'f48f75cb_20231219',
           size=416, onnx=True),
    _entry('rtmo-s-body7', 'rtmo-s_8xb32-600e_body7-640x640', 'dac2bf74_20231211', onnx=True),
    _entry('rtmo-m-body7', 'rtmo-m_16xb16-600e_body7-640x640', '39e78cc4_20231211', onnx=True),
    _entry('rtmo-l-body7', 'rtmo-l_16xb16-600e_body7-640x640', 'b37118ce_20231211', onnx=True),
    _entry('rtmo-s-coco', 'rtmo-s_8xb32-600e_coco-640x640', '8db55a59_20231211'),
    _entry('rtmo-m-coco', 'rtmo-m_16xb16-600e_coco-640x640', '6f4e0306_20231211'),
    _entry('rtmo-l-coco', 'rtmo-l_16xb16-600e_coco-640x640', '516a421f_20231211'),
    _entry('rtmo-s-crowdpose', 'rtmo-s_8xb32-700e_crowdpose-640x640', '79f81c0d_20231211',
           keypoints=14),
    # the official link really starts with 'rrtmo-m' (README and rtmo_crowdpose.yml agree)
    _entry('rtmo-m-crowdpose', 'rtmo-m_16xb16-700e_crowdpose-640x640', '0eaf670d_20231211',
           keypoints=14, prefix='r'),
    _entry('rtmo-l-crowdpose', 'rtmo-l_16xb16-700e_crowdpose-640x640', '1008211f_20231211',
           keypoints=14),
    _entry('rtmo-l-body7-crowdpose', 'rtmo-l_16xb16-700e_body7-crowdpose-640x640',
           '5bafdc11_20231219', keypoints=14),
)}

# Not official: the small model this package ships (rtmo_ros/models/), trained with rtmo_train on
# synthetic people. It needs no download; it is the offline default of the demo and the tests.
BUNDLED_NAME = 'rtmo-tiny-synthetic'


def bundled_path():
    """Path of the bundled ONNX graph (installed with the package as package data)."""
    return pathlib.Path(__file__).resolve().parents[1] / 'models' / 'rtmo_tiny_synthetic.onnx'


# mmpose config names are accepted too
ALIASES = {e.config: e.name for e in ZOO.values()}


def names():
    """Return the zoo's short names (``rtmo-<variant>-<dataset>``)."""
    return list(ZOO)


def get(name):
    """Return the :class:`ZooEntry` for a short name or an mmpose config name."""
    key = ALIASES.get(name, name)
    if key not in ZOO:
        raise ValueError(f'unknown model {name!r}: not a file path and not in the zoo '
                         f'({", ".join(ZOO)}; bundled: {BUNDLED_NAME})')
    return ZOO[key]
