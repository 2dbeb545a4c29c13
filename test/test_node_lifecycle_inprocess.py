"""The node's resource handling, in-process: cleanup and shutdown free the engine.

Over DDS the engine is invisible; here the test holds the node object, so it can check that
cleanup/shutdown call ``PoseEstimator.close()`` (which frees the session and, on GPU
backends, device memory) and that shutdown works from every primary state.
"""
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from rtmo_ros.pose_node import PoseNode  # noqa: E402

OK = TransitionCallbackReturn.SUCCESS


@pytest.fixture
def make_node(parity_dir):
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = []

    def make(model=parity_dir / 'rtmo-s_coco_seed1_mmdeploy.onnx'):
        # own namespace: a stale /rtmo_pose in other processes' graph caches would race the
        # over-DDS tests' service calls to the real node process
        node = PoseNode(context=context, namespace='/inprocess_lifecycle_test',
                        parameter_overrides=[
                            Parameter('model', value=str(model)),
                            Parameter('backend', value='onnxruntime'),
                            Parameter('num_threads', value=1)])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def closed(engine):
    return 'closed' in repr(engine)


def test_cleanup_closes_the_engine_and_a_new_configure_loads_a_fresh_one(make_node):
    node = make_node()
    assert node.trigger_configure() == OK
    first = node.engine
    assert not closed(first) and node.engine.backend == 'onnxruntime'
    assert node.trigger_activate() == OK and node.trigger_deactivate() == OK
    assert node.engine is first  # deactivate keeps the engine
    assert node.trigger_cleanup() == OK
    assert node.engine is None and closed(first)
    with pytest.raises(RuntimeError, match='closed'):
        first(None)  # a closed estimator refuses to run
    assert node.trigger_configure() == OK and node.engine is not first
    assert node.trigger_shutdown() == OK and node.engine is None


@pytest.mark.parametrize('steps', [(), ('configure',), ('configure', 'activate')])
def test_shutdown_from_every_state_releases_everything(make_node, steps):
    node = make_node()
    for step in steps:
        assert getattr(node, f'trigger_{step}')() == OK
    engine = node.engine
    assert node.trigger_shutdown() == OK
    assert node.engine is None and (engine is None or closed(engine))
    assert node._worker is None and node._pubs == {}
    assert all(s.inputs.subs == {} and s.pubs == {} for s in node.streams.values())


def test_a_missing_model_fails_configure_and_leaves_nothing_loaded(make_node, tmp_path):
    node = make_node(model=tmp_path / 'absent.onnx')
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.engine is None and node._pubs == {}
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'this is not protobuf')
    node.set_parameters([Parameter('model', value=str(corrupt))])
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.engine is None
