"""ONNX export: contract, TensorRT-parsable operators, parity with PyTorch and with mmdeploy."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rtmo_train import load_model
from rtmo_train.export import TENSORRT_OPS, export_onnx, main

PIXEL_TOL = 0.05
SCORE_TOL = 1e-3


@pytest.fixture(scope='module')
def model(parity_dir):
    return load_model(parity_dir / 'rtmo-s_coco_seed1.pth')


@pytest.fixture(scope='module')
def net_input(parity_dir):
    return np.load(parity_dir / 'rtmo-s_coco_seed1_io.npz')['input']


@pytest.fixture(scope='module')
def onnx_100(model, tmp_path_factory):
    """Dynamic-batch export with N = 100 (more rows than the fixture's 79 detections)."""
    path = tmp_path_factory.mktemp('onnx') / 'rtmo_s_n100.onnx'
    assert export_onnx(model, path, max_detections=100, dynamic_batch=True) == 100
    return path


_SESSIONS = {}


def run(path, inputs):
    if path not in _SESSIONS:  # building a session costs about a second: one per file
        _SESSIONS[path] = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return _SESSIONS[path].run(['dets', 'keypoints'], {'input': inputs})


def match(boxes, ref_boxes):
    dist = np.abs(boxes[:, None, :] - ref_boxes[None, :, :]).max(-1)
    idx = dist.argmin(1)
    assert len(set(idx.tolist())) == len(idx)
    assert dist.min(1).max() <= PIXEL_TOL
    return idx


def test_graph_is_valid_and_tensorrt_parsable(onnx_100):
    graph = onnx.load(str(onnx_100))
    onnx.checker.check_model(graph, full_check=True)
    assert max(o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')) >= 17
    ops = {node.op_type for node in graph.graph.node}
    assert ops <= TENSORRT_OPS, f'operators TensorRT may not parse: {ops - TENSORRT_OPS}'
    assert 'NonMaxSuppression' in ops
    assert [i.name for i in graph.graph.input] == ['input']
    assert [o.name for o in graph.graph.output] == ['dets', 'keypoints']
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 640, 640]


def test_matches_pytorch_and_pads_with_zeros(model, net_input, onnx_100):
    dets, kpts = run(onnx_100, net_input)
    assert dets.shape == (1, 100, 5) and kpts.shape == (1, 100, 17, 3)
    ref = model.predict_network(net_input)[0]
    n = len(ref['scores'])  # 79 detections in the fixture
    valid = dets[0, :, 4] > 0
    assert valid.sum() == n and valid[:n].all()
    assert np.all(dets[0, n:] == 0) and np.all(kpts[0, n:] == 0)
    idx = match(dets[0, :n, :4], ref['boxes'])
    assert np.abs(kpts[0, :n, :, :2] - ref['keypoints'][idx]).max() <= PIXEL_TOL
    assert np.abs(dets[0, :n, 4] - ref['scores'][idx]).max() <= SCORE_TOL
    assert np.abs(kpts[0, :n, :, 2] - ref['keypoint_scores'][idx]).max() <= SCORE_TOL
    assert np.all(np.diff(dets[0, :n, 4]) <= 0)


def test_dynamic_batch_runs_images_independently(net_input, onnx_100):
    grey = np.full_like(net_input, 114.0)
    dets, kpts = run(onnx_100, np.concatenate((net_input, grey)))
    assert dets.shape[0] == 2
    for b, image in enumerate((net_input, grey)):
        single_dets, single_kpts = run(onnx_100, image)
        np.testing.assert_allclose(dets[b], single_dets[0], atol=1e-3)
        np.testing.assert_allclose(kpts[b], single_kpts[0], atol=1e-3)


def test_cli_default_export_matches_mmdeploy(parity_dir, net_input, tmp_path, capsys):
    out = tmp_path / 'rtmo_s.onnx'
    assert main([str(parity_dir / 'rtmo-s_coco_seed1.pth'), str(out)]) == 0
    assert 'N=50' in capsys.readouterr().out
    dets, kpts = run(out, net_input)
    assert dets.shape == (1, 50, 5) and kpts.shape == (1, 50, 17, 3)
    ref_dets, ref_kpts = run(parity_dir / 'rtmo-s_coco_seed1_mmdeploy.onnx', net_input)
    ref_valid = ref_dets[0, :, 4] > 0
    assert ref_valid.sum() == 50  # the fixture has 79 detections: both graphs are full
    idx = match(dets[0, :, :4], ref_dets[0, ref_valid, :4])
    assert np.abs(kpts[0] - ref_kpts[0, ref_valid][idx]).max() <= PIXEL_TOL
    assert np.abs(dets[0, :, 4] - ref_dets[0, ref_valid, 4][idx]).max() <= SCORE_TOL


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / 'nope.pth'
    assert main([str(missing), str(tmp_path / 'x.onnx')]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and 'not found' in err
    assert not (tmp_path / 'x.onnx').exists()


def test_jetpack5_export_has_only_tensorrt85_ops_and_constant_topk(parity_dir, model, net_input,
                                                                    tmp_path):
    """TensorRT 8.5 imports no LayerNormalization and needs TopK's K constant: the --jetpack5
    graph has neither problem (checked with the ONNX tooling, no TensorRT here) and gives the
    opset-17 graph's keypoints."""
    from rtmo_ros.engine.backends.tensorrt_backend import graph_findings
    from rtmo_train.export import TENSORRT_85_OPS

    path = tmp_path / 'jp5.onnx'
    assert main([str(parity_dir / 'rtmo-s_coco_seed1.pth'), str(path), '--jetpack5']) == 0
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    assert max(o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')) == 16
    ops = {node.op_type for node in graph.graph.node}
    assert ops <= TENSORRT_85_OPS, f'operators TensorRT 8.5 cannot import: {ops - TENSORRT_85_OPS}'
    assert graph_findings(path) == {'layer_norm': False, 'computed_topk_k': False}
    dets, kpts = run(path, net_input)
    ref_path = tmp_path / 'o17.onnx'
    export_onnx(model, ref_path)
    ref_dets, ref_kpts = run(ref_path, net_input)
    assert graph_findings(ref_path)['layer_norm']
    valid = ref_dets[0, :, 4] > 0
    assert np.array_equal(dets[0, :, 4] > 0, valid)
    assert np.abs(kpts[0, valid, :, :2] - ref_kpts[0, valid, :, :2]).max() <= PIXEL_TOL



@pytest.fixture(scope='module')
def onnx_found(model, tmp_path_factory):
    """Dynamic-batch export with --rows found and N = 100."""
    path = tmp_path_factory.mktemp('onnx') / 'rtmo_s_found.onnx'
    assert export_onnx(model, path, max_detections=100, dynamic_batch=True, rows='found') == 100
    return path


def test_rows_found_gives_one_row_per_detection(model, net_input, onnx_found, onnx_100):
    """--rows found: as many rows as NMS kept (the DCC runs on those only), equal to the
    fixed-rows graph's valid rows; TensorRT-parsable operators, K computed (the tensorrt
    backend warns about it)."""
    from rtmo_ros.engine.backends.tensorrt_backend import graph_findings

    graph = onnx.load(str(onnx_found))
    assert {node.op_type for node in graph.graph.node} <= TENSORRT_OPS
    assert graph_findings(onnx_found)['computed_topk_k']
    dets, kpts = run(onnx_found, net_input)
    fixed_dets, fixed_kpts = run(onnx_100, net_input)
    n = len(model.predict_network(net_input)[0]['scores'])  # 79
    assert dets.shape == (1, n, 5) and kpts.shape == (1, n, 17, 3)
    np.testing.assert_allclose(dets[0], fixed_dets[0, :n], atol=1e-4)
    np.testing.assert_allclose(kpts[0], fixed_kpts[0, :n], atol=1e-3)


def test_rows_found_pads_the_image_with_fewer_people_and_caps_at_n(net_input, onnx_found,
                                                                   model, tmp_path):
    grey = np.full_like(net_input, 114.0)
    single = [run(onnx_found, image) for image in (net_input, grey)]
    dets, kpts = run(onnx_found, np.concatenate((net_input, grey)))
    assert dets.shape[1] == min(100, sum(d.shape[1] for d, _ in single))
    for b, (single_dets, single_kpts) in enumerate(single):
        rows = single_dets.shape[1]
        np.testing.assert_allclose(dets[b, :rows], single_dets[0], atol=1e-3)
        np.testing.assert_allclose(kpts[b, :rows], single_kpts[0], atol=1e-3)
        assert np.all(dets[b, rows:] == 0) and np.all(kpts[b, rows:] == 0)
    path = tmp_path / 'top5.onnx'
    assert export_onnx(model, path, max_detections=5, rows='found') == 5
    assert run(path, net_input)[0].shape == (1, 5, 5)


def test_rows_found_without_detections_is_one_zero_row(model, net_input, tmp_path):
    import copy

    import torch

    nobody = copy.deepcopy(model)
    with torch.no_grad():
        for conv in nobody.head.head_module.out_cls:
            conv.bias -= 30.0  # every score ~1e-13: nothing above 0.1
    path = tmp_path / 'nobody.onnx'
    export_onnx(nobody, path, rows='found')
    dets, kpts = run(path, net_input)
    assert dets.shape == (1, 1, 5) and np.all(dets == 0) and np.all(kpts == 0)


def test_rows_option_is_checked(model, tmp_path, parity_dir, capsys):
    with pytest.raises(ValueError, match='fixed, found'):
        export_onnx(model, tmp_path / 'x.onnx', rows='some')
    with pytest.raises(ValueError, match='TensorRT 8.5'):
        export_onnx(model, tmp_path / 'x.onnx', opset=16, rows='found')
    assert main([str(parity_dir / 'rtmo-s_coco_seed1.pth'), str(tmp_path / 'y.onnx'),
                 '--jetpack5', '--rows', 'found']) == 2
    assert 'TensorRT 8.5' in capsys.readouterr().err
