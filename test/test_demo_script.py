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
    assert load_demo().main(['--frames', '10', '--seed', '3', '--out', str(tmp_path)]) == 0
    report = json.loads((tmp_path / 'report.json').read_text())
    assert 'bundled' in report['demo_model'] and report['mode'] == 'online'
    assert report['frames'] == 10 and report['processed'] + report['dropped'] == 10
    assert report['model'].endswith('rtmo_tiny_synthetic.onnx')
    assert (tmp_path / 'annotated_strip.png').stat().st_size > 0
    assert (tmp_path / 'predictions.json').exists() and (tmp_path / 'poses_bag').is_dir()
    assert 'COCO AP / AR' in capsys.readouterr().out
