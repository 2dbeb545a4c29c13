"""Launch file, parameter YAML and RViz config agree with the node's declared parameters.

launch_ros is not installable from PyPI, so the launch file is checked statically here (it
compiles; its arguments are the documented ones); with launch_ros present it is also built.
"""
import ast
from dataclasses import fields
import importlib.util
import pathlib
import py_compile

import pytest
from repo_script import load_script
import yaml

from rtmo_ros import node_params
from rtmo_ros.node_params import NodeParams

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'pose.launch.py'
DOCUMENTED_ARGS = {'image_topic', 'depth_topic', 'camera_info_topic', 'cameras', 'use_depth',
                   'model', 'backend', 'params_file', 'namespace', 'autostart', 'respawn',
                   'respawn_delay', 'use_rviz', 'use_sim_time'}


def launch_arguments():
    """(name, default) pairs of the launch file's ARGUMENTS table, read from its AST."""
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == 'ARGUMENTS':
            return {elt.elts[0].value: elt.elts[1].value for elt in node.value.elts}
    raise AssertionError('no ARGUMENTS table in pose.launch.py')


def test_launch_file_compiles_and_declares_the_documented_arguments(tmp_path):
    py_compile.compile(str(LAUNCH), cfile=str(tmp_path / 'x.pyc'), doraise=True)
    args = launch_arguments()
    assert set(args) == DOCUMENTED_ARGS
    assert args['autostart'] == 'true' and args['use_rviz'] == 'false'
    text = LAUNCH.read_text()
    assert "name='rtmo_pose'" in text and "('image', image_topic)" in text


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch_ros is not installed')
def test_launch_description_builds():  # pragma: no cover - needs a ROS distro
    description = load_script('launch/pose.launch.py').generate_launch_description()
    names = {a.name for a in description.entities if hasattr(a, 'default_value')}
    assert names == DOCUMENTED_ARGS


def yaml_params():
    data = yaml.safe_load((REPO / 'config' / 'pose.yaml').read_text())
    assert list(data) == ['/**']
    return data['/**']['ros__parameters']


def test_pose_yaml_has_every_declared_parameter_with_its_default():
    params = yaml_params()
    assert list(params) == node_params.names()
    for f in fields(NodeParams):
        default = node_params.default_of(f)
        assert type(params[f.name]) is type(default), f.name
        assert params[f.name] == default, f.name
        assert node_params.check(f.name, params[f.name]) is None


def test_declared_parameters_carry_description_and_range():
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node('params_probe', context=context)
        node_params.declare(node)
        descs = {d.name: d for d in node.describe_parameters(node_params.names())}
        assert all(d.description for d in descs.values())
        rng = descs['score_thr'].floating_point_range[0]
        assert (rng.from_value, rng.to_value) == (0.0, 1.0)
        assert descs['qos_depth'].integer_range[0].to_value == 100
        assert 'compressed' in descs['image_transport'].additional_constraints
        result = node.set_parameters([rclpy.parameter.Parameter('nms_thr', value=1.2)])[0]
        assert not result.successful and '1.0' in result.reason
        assert NodeParams.from_node(node) == NodeParams()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.parametrize('name,value,words', [
    ('backend', 'cuda', 'auto, onnxruntime'), ('qos_reliability', 'maybe', 'auto, best_effort'),
    ('image_transport', 'compresed', 'raw, compressed'),
    ('autostart_failure', 'restart', 'retry, exit'),
    ('score_thr', 1.5, '[0.0, 1.0]'), ('qos_depth', 0, '[1, 100]')])
def test_check_names_the_allowed_values(name, value, words):
    assert words in node_params.check(name, value)


def test_rviz_config_shows_markers_and_the_annotated_image():
    config = yaml.safe_load((REPO / 'config' / 'rtmo.rviz').read_text())
    topics = {d['Topic']['Value'] for d in config['Visualization Manager']['Displays']
              if 'Topic' in d}
    assert topics == {'/markers', '/image_annotated'}
