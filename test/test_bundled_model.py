"""The bundled demo model: the committed file is the one measured, and it finds synthetic people.

``rtmo_ros/models/rtmo_tiny_synthetic.onnx`` was trained with rtmo_train (recipe in its .json and
the README) and is the offline default of ``make demo``. Here it is scored on a demo bag it never
saw (seed 11; at the demo's 320x240 and at 640x480), once by rtmo-bag-eval and once by a plain
xtcocotools run on the files it wrote.
"""
import hashlib
import json

import pytest

from rtmo_ros import bag_eval, demo_bag
from rtmo_ros.engine import zoo

ONNX = zoo.bundled_path()
INFO = json.loads(ONNX.with_suffix('.json').read_text())


def test_file_is_small_and_is_the_one_measured():
    data = ONNX.read_bytes()
    assert len(data) <= 10_000_000
    assert INFO['onnx']['bytes'] == len(data)
    assert INFO['onnx']['sha256'] == hashlib.sha256(data).hexdigest()
    held_out = INFO['evaluation']
    assert held_out['images'] == 100
    assert held_out['onnxruntime']['AP'] >= 0.5
    assert held_out['pytorch']['AP'] == pytest.approx(held_out['onnxruntime']['AP'], abs=0.02)


def xtcocotools_ap(gt_path, predictions_path):
    """AP of predictions.json against gt.json with xtcocotools alone (no rtmo_ros code, and
    xtcocotools' own default COCO-17 sigmas)."""
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    gt = COCO(str(gt_path))
    dt = gt.loadRes(str(predictions_path))
    ev = COCOeval(gt, dt, 'keypoints', use_area=True)
    ev.params.useSegm = None
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0]


@pytest.mark.parametrize('size', [(320, 240), (640, 480)], ids=['demo-size', 'vga'])
def test_finds_the_synthetic_people_on_an_unseen_demo_bag(tmp_path, size):
    bag, gt = demo_bag.write_demo_bag(tmp_path / 'bag', frames=24, seed=11, width=size[0],
                                      height=size[1], progress=False)
    # the model's own keypoints: smoothing (on by default, as in the node) lags walkers
    report = bag_eval.evaluate_bag(bag, gt=gt, model=str(ONNX), backend='onnxruntime',
                                   out=tmp_path / 'out', progress=False, smoothing=False)
    assert report['ap'] >= 0.5 and report['dropped'] == 0
    independent = xtcocotools_ap(tmp_path / 'out' / 'gt.json',
                                 tmp_path / 'out' / 'predictions.json')
    assert independent == pytest.approx(report['ap'], abs=1e-9)


def test_zoo_name_resolves_to_the_packaged_file():
    from rtmo_ros.engine.estimator import resolve_model

    path, name = resolve_model(zoo.BUNDLED_NAME)
    assert path == ONNX and name == zoo.BUNDLED_NAME
