"""`make demo`'s script, shortened: bundled model by default, node over DDS, report and picture."""
import importlib.util
import json
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_demo():
    spec = importlib.util.spec_from_file_location('demo_script', REPO / 'scripts' / 'demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_runs_the_bundled_model_through_the_node(tmp_path, capsys):
    pytest.importorskip('rclpy')
    stale = ['annotated_strip.png', 'predictions_realtime.json', '.report.md.tmp-7.md']
    for name in stale:  # an earlier run's files: replaced or removed, never mixed in
        (tmp_path / name).write_text('old')
    assert load_demo().main(['--frames', '10', '--seed', '3', '--out', str(tmp_path)]) == 0
    report = json.loads((tmp_path / 'report.json').read_text())
    assert 'bundled' in report['demo_model'] and report['mode'] == 'online'
    assert report['model'].endswith('rtmo_tiny_synthetic.onnx')
    # accuracy: every frame through the node in lock-step
    assert (report['frames'], report['processed'], report['timed_out']) == (10, 10, 0)
    # real time: at the bag's 30 Hz, drops allowed
    realtime = report['realtime']
    assert realtime['rate'] == 1.0 and realtime['frames'] == 10
    assert realtime['processed'] + realtime['dropped'] == 10 and realtime['ap'] is not None
    assert (tmp_path / 'annotated_strip.png').read_bytes()[:4] == b'\x89PNG'
    assert (tmp_path / 'predictions.json').exists() and (tmp_path / 'poses_bag').is_dir()
    assert not (tmp_path / '.report.md.tmp-7.md').exists()
    assert set(report['files']) | {'data'} == {p.name for p in tmp_path.iterdir()}
    out = capsys.readouterr().out
    assert 'COCO AP / AR' in out and 'over all 10 frames' in out
    assert 'lock-step through the node: 0 of 10 timed out' in out
    assert 'real time      at 30 Hz:' in out and 'dropped by the node' in out
