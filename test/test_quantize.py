"""int8 on ONNX Runtime (CPU): the bundled model quantized by ``rtmo_ros.engine.quantize``.

Real ONNX Runtime sessions throughout. Bounds come from benchmarks/bench_int8.py (bundled
model, 48 rendered frames: median drift 0.5 px, p90 2.9 px; 24-frame demo bag: AP 0.812 fp32,
0.798 int8) with headroom.
"""
import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from rtmo_ros.engine import PoseEstimator, quantize, zoo
from rtmo_ros.engine.postprocess import box_iou

pytest.importorskip('onnxruntime')
pytest.importorskip('onnx')

BUNDLED = zoo.bundled_path()


def frames(count, first_seed=1000, size=(320, 240)):
    from rtmo_train.data.synthetic import render_sequence

    return [next(render_sequence(seed, 1, *size)) for seed in range(first_seed,
                                                                     first_seed + count)]


@pytest.fixture(scope='module')
def home(tmp_path_factory):
    """An RTMO_HOME whose engine cache holds the bundled model's int8 graph (made once)."""
    root = tmp_path_factory.mktemp('rtmo_home')
    quantize.int8_path(BUNDLED, root / 'engines')
    return root


@pytest.fixture(scope='module')
def pair(home):
    kwargs = dict(backend='onnxruntime', num_threads=2, cache_dir=home / 'engines')
    with PoseEstimator(str(BUNDLED), precision='fp32', **kwargs) as fp32, \
            PoseEstimator(str(BUNDLED), precision='int8', **kwargs) as int8:
        yield fp32, int8


def test_int8_finds_the_people_with_keypoints_close_to_fp32(pair):
    fp32, int8 = pair
    assert (int8.backend, int8.precision, fp32.precision) == ('onnxruntime', 'int8', 'fp32')
    dists, found, people = [], 0, 0
    for image, persons in frames(16):
        a, b = fp32(image), int8(image)
        gt = np.array([p['bbox'] for p in persons if p['num_keypoints'] >= 8], np.float32)
        if len(gt):
            gt[:, 2:] += gt[:, :2]
            people += len(gt)
            found += int((box_iou(gt, b.boxes).max(axis=1) > 0.5).sum()) if len(b) else 0
        if len(a) and len(b):
            from scipy.optimize import linear_sum_assignment
            overlap = box_iou(a.boxes, b.boxes)
            for i, j in zip(*linear_sum_assignment(-overlap)):
                if overlap[i, j] > 0.5:
                    dists.extend(np.linalg.norm(a.keypoints[i] - b.keypoints[j], axis=-1))
    assert people >= 16 and found >= 0.8 * people
    assert len(dists) >= 17 * 16
    assert np.median(dists) <= 1.5 and np.percentile(dists, 90) <= 5.0


def test_int8_ap_on_a_demo_bag_is_within_003_of_fp32(home, tmp_path):
    from rtmo_ros import bag_eval, demo_bag

    bag, gt = demo_bag.write_demo_bag(tmp_path / 'bag', frames=24, seed=11, width=320,
                                      height=240, progress=False)
    int8 = quantize.int8_path(BUNDLED, home / 'engines')  # a plain .onnx graph
    ap = [bag_eval.evaluate_bag(bag, gt=gt, model=str(path), backend='onnxruntime',
                                out=tmp_path / name, progress=False, smoothing=False)['ap']
          for name, path in (('fp32', BUNDLED), ('int8', int8))]
    assert ap[0] >= 0.5 and ap[1] == pytest.approx(ap[0], abs=0.03)


def test_the_cached_graph_is_reused_without_calibrating(home, monkeypatch):
    path = quantize.int8_path(BUNDLED, home / 'engines')
    sidecar = path.with_name(path.name.replace('.onnx', '.json'))
    meta = json.loads(sidecar.read_text())
    assert meta['key']['onnx_sha256'] and meta['key']['onnxruntime']
    mtime = path.stat().st_mtime_ns

    def no_calibration(*args, **kwargs):
        raise AssertionError('calibrated again')
    monkeypatch.setattr(quantize, 'quantize_model', no_calibration)
    assert quantize.int8_path(BUNDLED, home / 'engines') == path
    with PoseEstimator(str(BUNDLED), backend='onnxruntime', precision='int8',
                       cache_dir=home / 'engines') as est:
        assert est.precision == 'int8'
    assert path.stat().st_mtime_ns == mtime


def test_a_corrupt_cached_graph_is_made_again(tmp_path):
    cache = tmp_path / 'cache'
    path = quantize.int8_path(BUNDLED, cache, num_images=4)
    path.write_bytes(b'truncated')
    again = quantize.int8_path(BUNDLED, cache, num_images=4)
    assert again == path and again.stat().st_size > 1000


def test_a_read_only_cache_still_works_with_a_warning(tmp_path, caplog):
    (tmp_path / 'f.txt').write_text('a file, so no folder can be made under it, even by root')
    image = frames(1)[0][0]
    with caplog.at_level(logging.WARNING, logger='rtmo_ros.engine.quantize'):
        with PoseEstimator(str(BUNDLED), backend='onnxruntime', precision='int8',
                           cache_dir=tmp_path / 'f.txt' / 'cache') as est:
            assert est.precision == 'int8' and len(est(image)) >= 1
    assert 'could not write the int8 graph' in caplog.text


def test_the_temporary_int8_graph_of_a_read_only_cache_is_removed_at_exit(tmp_path):
    (tmp_path / 'f.txt').write_text('no folder can be made under a file')
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    code = ('import sys; from rtmo_ros.engine import quantize; '
            'p = quantize.int8_path(sys.argv[1], sys.argv[2], num_images=4); '
            'assert p.is_file(); print(p)')
    done = subprocess.run([sys.executable, '-c', code, str(BUNDLED),
                           str(tmp_path / 'f.txt' / 'cache')], capture_output=True, text=True,
                          env=dict(os.environ, TMPDIR=str(tmp)), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(tmp))  # it was made there ...
    assert list(tmp.glob('rtmo-int8-*')) == []  # ... and is gone once the process ended


@pytest.mark.parametrize('backend', ['torch', 'tensorrt'])
def test_int8_on_another_backend_names_onnxruntime(backend, tmp_path):
    with pytest.raises(ValueError, match='onnxruntime'):
        PoseEstimator(str(tmp_path / 'model.pth'), backend=backend, precision='int8')
    with pytest.raises(ValueError, match='int8'):
        PoseEstimator(str(BUNDLED), backend='onnxruntime', precision='int4')


def test_rtmo_quantize_cli_on_a_folder_of_images(tmp_path, capsys):
    folder = tmp_path / 'images'
    folder.mkdir()
    for index, (image, _) in enumerate(frames(8, first_seed=200, size=(480, 360))):
        cv2.imwrite(str(folder / f'{index}.{"png" if index % 2 else "jpg"}'), image)
    out = tmp_path / 'out' / 'mine.int8.onnx'
    assert quantize.main([str(BUNDLED), '--images', str(folder), '--out', str(out),
                          '--num-images', '8']) == 0
    assert str(out) in capsys.readouterr().out
    with PoseEstimator(str(out), backend='onnxruntime', num_threads=2) as est:
        assert len(est(frames(1)[0][0])) >= 1
    assert quantize.main([str(BUNDLED), '--images', str(tmp_path / 'out')]) == 1


def test_rtmo_pose_precision_int8(home, tmp_path, monkeypatch):
    from rtmo_ros.engine.cli import main

    monkeypatch.setenv('RTMO_HOME', str(home))  # the module's cache: no calibration here
    image_path = tmp_path / 'a.png'
    cv2.imwrite(str(image_path), frames(1)[0][0])
    result = tmp_path / 'poses.json'
    assert main([str(image_path), '--model', str(BUNDLED), '--backend', 'onnxruntime',
                 '--precision', 'int8', '--threads', '2', '--json', str(result)]) == 0
    doc = json.loads(result.read_text())
    assert doc['precision'] == 'int8' and len(doc['results'][0]['persons']) >= 1


def test_bag_eval_takes_the_node_precision_int8(home, tmp_path, monkeypatch):
    """rtmo-bag-eval --precision int8 runs the int8 graph offline, as the node would."""
    from rtmo_ros import bag_eval, demo_bag

    monkeypatch.setenv('RTMO_HOME', str(home))  # the module's cache: no calibration here
    bag, gt = demo_bag.write_demo_bag(tmp_path / 'bag', frames=6, seed=3, width=320,
                                      height=240, progress=False)
    code = bag_eval.main([str(bag), '--gt', str(gt), '--model', str(BUNDLED),
                          '--backend', 'onnxruntime', '--precision', 'int8', '--quiet',
                          '--out', str(tmp_path / 'out')])
    report = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert code == 0 and report['frames'] == 6 and report['ap'] > 0.3
