"""The openvino backend: real OpenVINO CPU compilations of the same RTMO graphs.

Against mmpose's own outputs (the parity fixture) and ONNX Runtime on the same graph, with the
dynamic-batch bundled model, bf16 where this CPU computes it natively, and the refusals.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

ov = pytest.importorskip('openvino')

from rtmo_ros.engine import PoseEstimator, zoo  # noqa: E402
from rtmo_ros.engine.backends import BackendUnavailable  # noqa: E402
from rtmo_ros.engine.backends.openvino_backend import cpu_has_bf16  # noqa: E402

ONNX = 'rtmo-s_coco_seed1_mmdeploy.onnx'
NATIVE_BF16 = cpu_has_bf16(ov.Core())


@pytest.fixture(scope='module')
def fixture_io(parity_dir):
    return dict(np.load(parity_dir / 'rtmo-s_coco_seed1_io.npz'))


@pytest.fixture(scope='module')
def fp32(parity_dir, tmp_path_factory):
    with PoseEstimator(parity_dir / ONNX, backend='openvino', precision='fp32', num_threads=2,
                       cache_dir=tmp_path_factory.mktemp('cache')) as est:
        yield est


def test_openvino_fp32_matches_mmpose_and_onnxruntime(fp32, parity_dir, fixture_io):
    image = fixture_io['image_bgr']
    poses = fp32(image)
    assert (fp32.backend, fp32.precision, fp32.input_size) == ('openvino', 'fp32', (640, 640))
    assert len(poses) == 50  # the graph's top 50 after its NMS, as on ONNX Runtime
    dist = np.abs(poses.boxes[:, None, :] - fixture_io['bboxes'][None]).max(-1)
    idx = dist.argmin(1)
    assert dist.min(1).max() < 0.05 and len(set(idx.tolist())) == 50
    assert np.abs(poses.keypoints - fixture_io['keypoints'][idx]).max() < 0.05
    with PoseEstimator(parity_dir / ONNX, backend='onnxruntime', num_threads=2) as ort:
        want = ort(image)
    # near-equal scores of random weights may swap neighbours in the order: match by box
    near = np.abs(poses.boxes[:, None, :] - want.boxes[None]).max(-1).argmin(1)
    assert len(set(near.tolist())) == 50
    assert np.abs(poses.keypoints - want.keypoints[near]).max() < 0.01  # 5e-4 px measured
    assert np.abs(poses.scores - want.scores[near]).max() < 1e-4


def test_the_dynamic_batch_bundled_model_runs_batched():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (240, 320, 3), np.uint8),
              rng.integers(0, 256, (300, 200, 3), np.uint8)]
    with PoseEstimator(zoo.bundled_path(), backend='openvino', num_threads=1) as est:
        batched = est.batch(images)
        singles = [est(im) for im in images]
        assert est.precision == 'fp32'  # fp16, the default, is a GPU precision: f32 here
    for a, b in zip(batched, singles):
        assert len(a) == len(b)
        assert np.allclose(a.keypoints, b.keypoints, atol=1e-3)


@pytest.mark.skipif(not NATIVE_BF16, reason='this CPU has no native bf16')
def test_bf16_runs_on_a_cpu_with_native_bf16(fp32, parity_dir, fixture_io):
    image = fixture_io['image_bgr']
    want = fp32(image)
    with PoseEstimator(parity_dir / ONNX, backend='openvino', precision='bf16',
                       num_threads=2) as est:
        got = est(image)
        assert est.precision == 'bf16'
    # random weights give 50 near-equal people: compare each with the fp32 person nearest in box
    dist = np.abs(got.boxes[:, None, :] - want.boxes[None]).max(-1)
    drift = np.linalg.norm(got.keypoints - want.keypoints[dist.argmin(1)], axis=-1)
    assert len(got) > 0 and np.median(drift) < 2.0, np.median(drift)


@pytest.mark.skipif(NATIVE_BF16, reason='this CPU computes bf16 natively')
def test_bf16_is_refused_on_a_cpu_without_native_bf16(parity_dir):
    with pytest.raises(BackendUnavailable, match='natively'):
        PoseEstimator(parity_dir / ONNX, backend='openvino', precision='bf16')


@pytest.mark.parametrize('kwargs, words', [
    ({'backend': 'openvino', 'device': 'cuda:0'}, 'runs on the cpu'),
    ({'backend': 'openvino', 'precision': 'int8'}, 'int8 runs only on the onnxruntime'),
    ({'backend': 'onnxruntime', 'precision': 'bf16'}, 'set backend openvino'),
    ({'backend': 'auto', 'precision': 'bf16'}, 'set backend openvino'),
])
def test_contradictory_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PoseEstimator(zoo.bundled_path(), **kwargs)


def test_a_graph_that_is_not_rtmo_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])])
    path = tmp_path / 'relu.onnx'
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ValueError, match='not an RTMO pose-detection graph'):
        PoseEstimator(path, backend='openvino')
    (tmp_path / 'junk.onnx').write_bytes(b'not a model')
    with pytest.raises(ValueError, match='not a loadable ONNX model'):
        PoseEstimator(tmp_path / 'junk.onnx', backend='openvino')


def test_rtmo_pose_cli_runs_openvino(tmp_path):
    import cv2
    image = tmp_path / 'frame.png'
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8))
    out = tmp_path / 'out.json'
    subprocess.run([sys.executable, '-m', 'rtmo_ros.engine.cli', str(image), '--model',
                    'rtmo-tiny-synthetic', '--backend', 'openvino', '--precision', 'fp32',
                    '--json', str(out)], check=True, capture_output=True, timeout=300)
    header = json.loads(out.read_text())
    found = header if 'backend' in header else header.get('header', header)
    assert found['backend'] == 'openvino' and found['precision'] == 'fp32'


@pytest.mark.parametrize('backend, precision, ok', [
    ('openvino', 'bf16' if NATIVE_BF16 else 'fp32', True),
    ('onnxruntime', 'bf16', False),  # bf16 needs openvino: configure fails, saying so
])
def test_the_node_configures_openvino(backend, precision, ok):
    rclpy = pytest.importorskip('rclpy')
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from rtmo_ros.pose_node import PoseNode
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = PoseNode(context=context, namespace='/openvino_node_test', parameter_overrides=[
            Parameter('model', value='rtmo-tiny-synthetic'), Parameter('backend', value=backend),
            Parameter('precision', value=precision), Parameter('num_threads', value=1)])
        result = node.trigger_configure()
        if ok:
            assert result == TransitionCallbackReturn.SUCCESS
            assert (node.engine.backend, node.engine.precision) == ('openvino', precision)
        else:
            assert result != TransitionCallbackReturn.SUCCESS and node.engine is None
        node.trigger_shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
