"""rtmo-check on this machine: real ONNX Runtime sessions on the bundled model (CPU only).

What runs here is the CPU part: the reference, ONNX Runtime CPU fp32 (and int8 in one test),
torch CPU from a checkpoint; GPU cases must be listed as skipped with their reason. The
report must carry every key the module docstring documents.
"""
from dataclasses import replace
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from rtmo_ros.engine import check
from rtmo_ros.engine.poses import Poses
from rtmo_ros.engine.zoo import bundled_path

FAST = ['--repeat', '2', '--threads', '2']


def documented_keys():
    """The key paths of the docstring's schema table, e.g. 'cases[].parity.kpt_max_px'."""
    return re.findall(r'^\| ``([^`]+)`` \|', check.__doc__, flags=re.MULTILINE)


def lookup(report, path):
    """Values at a documented path ('cases[].timing.p90_ms' -> one per case)."""
    values = [report]
    for part in path.split('.'):
        listed = part.endswith('[]')
        key = part[:-2] if listed else part
        values = [v[key] for v in values if v is not None]
        if listed:
            values = [item for v in values for item in v]
    return values


@pytest.fixture(scope='module')
def cpu_run(tmp_path_factory):
    """(exit status, stdout, report) of one CPU run on the bundled model, int8 skipped."""
    path = tmp_path_factory.mktemp('check') / 'check.json'
    out = subprocess.run([sys.executable, '-m', 'rtmo_ros.engine.check', *FAST, '--skip',
                          'int8', '--json', str(path)], capture_output=True, text=True)
    return out.returncode, out.stdout, json.loads(path.read_text())


def by_name(report):
    return {case['name']: case for case in report['cases']}


def test_cpu_run_passes_and_exits_0(cpu_run):
    status, stdout, report = cpu_run
    assert status == 0, stdout
    assert report['passed'] is True and report['schema'] == 'rtmo-check/1'
    case = by_name(report)['onnxruntime-cpu-fp32-b1']
    assert case['status'] == 'pass' and case['precision_reported'] == 'fp32'
    assert case['provider_reported'] in ('cpu', None)  # None: an engine without ort_provider
    assert case['parity']['matched'] == case['parity']['people_ref'] > 0
    assert case['parity']['kpt_max_px'] <= 0.05
    assert case['timing']['repeat'] == 2 and case['timing']['median_ms'] > 0
    assert 'PASSED' in stdout and 'onnxruntime-cpu-fp32-b1' in stdout


def test_report_has_every_documented_key_and_no_undocumented_one(cpu_run):
    report = cpu_run[2]
    documented = documented_keys()
    assert len(documented) > 40
    for path in documented:
        lookup(report, path)  # KeyError names the missing key
    for name in ('model', 'reference', 'inventory'):
        assert {f'{name}.{k}' for k in report[name]} <= set(documented), name
    assert set(report) - {'model', 'reference', 'inventory', 'cases'} <= set(documented)
    for case in report['cases']:
        assert {f'cases[].{k}' for k in case} <= set(documented)
        for part in ('parity', 'timing'):
            if case[part] is not None:
                assert {f'cases[].{part}.{k}' for k in case[part]} <= set(documented)


def test_gpu_cases_and_batch_8_on_a_fixed_batch_graph_are_skipped_with_reasons(cpu_run):
    report = cpu_run[2]
    cases = by_name(report)
    for case in report['cases']:
        if case['status'] == 'skip':
            assert case['reason'] and case['parity'] is None and case['timing'] is None
    if 'cuda' not in report['inventory']['onnxruntime']['short']:
        assert cases['onnxruntime-cuda-fp32-b1']['reason'] == \
            'onnxruntime has no CUDAExecutionProvider'
    if not report['inventory']['tensorrt_usable']['ok']:
        assert cases['tensorrt-cuda-fp16-b1']['status'] == 'skip'
    if not report['inventory']['torch']['cuda_available']:
        assert cases['torch-cuda-fp16-b1']['status'] == 'skip'
    assert 'no --checkpoint' in cases['torch-cpu-fp32-b1']['reason']
    assert cases['onnxruntime-cpu-int8-b1']['reason'] == 'skipped by --skip'
    if not report['model']['dynamic_batch']:  # the bundled graph is exported at batch 1
        assert 'rtmo-export --dynamic-batch' in cases['onnxruntime-cpu-fp32-b8']['reason']
    else:
        assert cases['onnxruntime-cpu-fp32-b8']['status'] == 'pass'


def test_openvino_cases_run_when_it_is_installed(cpu_run):
    report = cpu_run[2]
    cases, ov = by_name(report), report['inventory']['openvino']
    if ov['version'] is None:
        assert cases['openvino-cpu-fp32-b1']['reason'] == 'openvino is not installed'
        return
    fp32 = cases['openvino-cpu-fp32-b1']
    assert fp32['status'] == 'pass' and fp32['parity']['kpt_max_px'] <= 0.05
    assert fp32['hardware_id'] == 'openvino:cpu' and fp32['precision_reported'] == 'fp32'
    bf16 = cases['openvino-cpu-bf16-b1']
    if ov['bf16']:  # drift reported, not judged
        assert bf16['status'] == 'pass' and bf16['precision_reported'] == 'bf16'
        assert bf16['parity']['tolerance_px'] is None
    else:
        assert 'natively' in bf16['reason']


def perturbed_graph(path):
    """The bundled graph with every weight scaled by 1.02: same graph, other outputs."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundled_path()))
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.ndim == 4:  # conv weights
            init.CopyFrom(numpy_helper.from_array(array * np.float32(1.02), init.name))
    onnx.save(model, str(path))
    return path


def test_a_graph_with_other_weights_fails_parity_and_exits_1(tmp_path, capsys):
    model = perturbed_graph(tmp_path / 'perturbed.onnx')
    status = check.main(['--model', str(model), '--reference-model', str(bundled_path()),
                         '--skip', 'int8', '--json', str(tmp_path / 'c.json'), *FAST])
    report = json.loads((tmp_path / 'c.json').read_text())
    case = by_name(report)['onnxruntime-cpu-fp32-b1']
    assert status == 1 and report['passed'] is False
    assert case['status'] == 'fail' and case['parity']['kpt_max_px'] > 0.05, case
    assert 'FAIL' in capsys.readouterr().out


def test_int8_reports_its_drift_and_passes_when_it_finds_the_people(tmp_path):
    # the int8 graph is calibrated once (about a minute) and cached in the model cache
    status = check.main(['--skip', 'torch', '--json', str(tmp_path / 'c.json'), *FAST])
    case = by_name(json.loads((tmp_path / 'c.json').read_text()))['onnxruntime-cpu-int8-b1']
    assert status == 0 and case['status'] == 'pass' and case['precision_reported'] == 'int8'
    assert case['parity']['tolerance_px'] is None and case['parity']['kpt_median_px'] > 0


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    """(checkpoint, dynamic-batch graph) of a seeded random small RTMO (rtmo_train)."""
    torch = pytest.importorskip('torch')
    from rtmo_train import save_checkpoint
    from rtmo_train.export import export_onnx
    from rtmo_train.model.rtmo import build_model
    from rtmo_train.train_config import tiny_preset

    folder = tmp_path_factory.mktemp('tiny')
    torch.manual_seed(0)
    # the smallest RTMO at 160 px: the torch CPU cases stay fast
    model = build_model(replace(tiny_preset().model, input_size=(160, 160), widen=0.125)).eval()
    # a new head scores every prior at its 0.01 prior, below the threshold: bias 0 puts them
    # at about 0.5, so people come out (50 an image, the graph's cap, where ties are allowed)
    with torch.no_grad():
        for conv in model.head.head_module.out_cls:
            conv.bias.fill_(0.0)
    save_checkpoint(model, folder / 'tiny.pth')
    export_onnx(model, folder / 'tiny.onnx', dynamic_batch=True)
    return folder / 'tiny.pth', folder / 'tiny.onnx'


def test_dynamic_batch_graph_and_its_checkpoint_run_batch_8_on_onnxruntime_and_torch(
        tiny_checkpoint, tmp_path):
    pth, onnx_path = tiny_checkpoint
    status = check.main(['--model', str(onnx_path), '--checkpoint', str(pth), '--skip',
                         'int8', '--repeat', '1', '--threads', '1',
                         '--json', str(tmp_path / 'c.json')])
    report = json.loads((tmp_path / 'c.json').read_text())
    cases = by_name(report)
    assert status == 0 and report['model']['dynamic_batch'] is True
    for name in ('onnxruntime-cpu-fp32-b8', 'torch-cpu-fp32-b1', 'torch-cpu-fp32-b8'):
        assert cases[name]['status'] == 'pass', cases[name]
    assert cases['torch-cpu-fp32-b8']['parity']['people_ref'] > 0


def test_help_runs_where_rclpy_cannot_be_imported():
    code = ('import runpy, sys; sys.modules["rclpy"] = None; sys.argv = ["rtmo-check", '
            '"--help"]; runpy.run_module("rtmo_ros.engine.check", run_name="__main__")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'usage: rtmo-check' in out.stdout and '--json' in out.stdout


def test_importing_the_check_loads_no_ros_torch_nor_onnxruntime():
    code = 'import sys, rtmo_ros.engine.check; print(" ".join(sorted(sys.modules)))'
    loaded = set(subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                                text=True).stdout.split())
    assert not {'rclpy', 'torch', 'tensorrt', 'onnxruntime', 'rtmo_train'} & loaded


@pytest.mark.parametrize('argv', [['--model', 'missing/model.onnx'],
                                  ['--checkpoint', 'missing.pth'], ['--repeat', '0']])
def test_bad_usage_exits_2(argv, capsys):
    try:
        status = check.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert 'rtmo-check: error' in capsys.readouterr().err


def poses(boxes, scores, shift=0.0):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    keypoints = np.repeat(boxes[:, None, :2], 17, axis=1) + np.float32(shift)
    return Poses(boxes, np.asarray(scores, np.float32), keypoints,
                 np.ones((len(boxes), 17), np.float32))


def test_fp16_tolerates_a_doubtful_person_on_one_side_but_not_a_confident_one():
    ref = poses([[0, 0, 50, 100], [200, 0, 250, 100]], [0.9, 0.15])
    drifted = poses([[1, 0, 51, 100]], [0.88], shift=0.7)
    parity, failure = check.compare([ref], [drifted], 'fp16')
    assert failure == '' and parity['matched'] == 1 and parity['kpt_max_px'] > 0.05
    assert check.compare([ref], [drifted], 'fp32')[1]  # fp32: the very same people
    missing = poses([[200, 0, 250, 100]], [0.15])
    assert check.compare([ref], [missing], 'fp16')[0]['unmatched'] == 1


def test_fp32_fails_beyond_five_hundredths_of_a_pixel():
    ref = poses([[0, 0, 50, 100]], [0.9])
    assert check.compare([ref], [poses([[0, 0, 50, 100]], [0.9], 0.03)], 'fp32')[1] == ''
    assert 'tolerance' in check.compare([ref], [poses([[0, 0, 50, 100]], [0.9], 0.06)],
                                        'fp32')[1]


def test_without_rtmo_train_the_frames_are_drawn_and_the_same_every_time(monkeypatch):
    monkeypatch.setitem(sys.modules, 'rtmo_train.data.synthetic', None)  # import fails
    frames, source = check.deterministic_frames(count=2)
    again, _ = check.deterministic_frames(count=2)
    assert source == 'drawn' and frames[0].shape == (480, 640, 3)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
    assert not np.array_equal(frames[0], frames[1])


def test_the_training_step_runs_with_bf16_autocast_on_the_cpu():
    # the same code runs with fp16 autocast and a GradScaler on CUDA (--train-step)
    pytest.importorskip('torch')
    case = check.train_step_case('cpu', repeat=1)
    assert case['status'] == 'pass', case['reason']
    assert case['detail']['amp'] == 'bf16' and len(case['detail']['losses']) == 2
    assert case['timing']['images_per_s'] > 0 and case['batch'] == 8
