"""Launch the ``rtmo_pose`` lifecycle node and, optionally, RViz.

    ros2 launch rtmo_ros pose.launch.py image_topic:=/cam/image_raw model:=/path/rtmo-s.onnx

Arguments: image_topic, depth_topic, camera_info_topic, cameras, use_depth, model, backend,
params_file, namespace, autostart, respawn, respawn_delay, use_rviz, use_sim_time (see each
one's description: ``ros2 launch rtmo_ros pose.launch.py -s``).

Lifecycle: with ``autostart:=true`` (default) the node configures and activates itself through
its own ``autostart`` parameter, which works the same on Humble, Jazzy and Kilted (Humble's
launch_ros has no ``LifecycleNode(autostart=...)``). With ``autostart:=false`` it waits in
``unconfigured`` for ``ros2 lifecycle set /rtmo_pose configure`` and ``activate``.

Several cameras: ``cameras:=front,rear`` serves ``front/image`` and ``rear/image`` (in the
node's namespace) and publishes ``front/poses`` and ``rear/poses``; the image_topic /
depth_topic / camera_info_topic remappings apply to the single-camera topics only, so remap
``front/image:=...`` in your own launch file (README, "Several cameras").
``model``, ``backend`` and ``use_depth`` override ``params_file`` only when given (non-empty).
For 3D, point ``depth_topic`` at depth registered to the colour image, e.g. a RealSense's
``/camera/aligned_depth_to_color/image_raw``, and ``camera_info_topic`` at the colour camera's
``camera_info``.

Failures: with ``respawn:=true`` the node runs with ``autostart_failure: exit``, so a failed
autostart (model not downloadable, no GPU yet) ends the process with code 1 and launch starts a
new one after ``respawn_delay`` seconds. Without it the node retries by itself with back-off
(``autostart_failure: retry``, the parameter file's default) and reports ERROR on /diagnostics.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = 'rtmo_ros'

ARGUMENTS = (
    ('image_topic', 'image', 'image topic to subscribe to (image/compressed is remapped to '
                             '<image_topic>/compressed)'),
    ('depth_topic', 'depth', 'depth image aligned to the image (16UC1 mm / 32FC1 m), read '
                             'with use_depth'),
    ('camera_info_topic', 'camera_info', 'CameraInfo of the image (markers, 3D)'),
    ('cameras', '', 'comma-separated camera names (cam0,cam1): topics <cam>/image -> '
                    '<cam>/poses, one engine call for all; empty = params_file'),
    ('use_depth', '', 'true/false: publish 3D keypoints from depth_topic; empty = params_file'),
    ('model', '', 'RTMO model: .onnx/.engine/.pth path or zoo name; empty = params_file'),
    ('backend', '', 'auto, onnxruntime, tensorrt, openvino or torch; empty = params_file'),
    ('params_file', '', 'node parameters YAML; empty = <share>/rtmo_ros/config/pose.yaml'),
    ('namespace', '', 'namespace of the node and its topics'),
    ('autostart', 'true', 'configure and activate the node at start-up'),
    ('respawn', 'false', 'restart the node process when it exits (then a failed autostart '
                         'exits with code 1 instead of retrying in-process)'),
    ('respawn_delay', '2.0', 'seconds before a respawn'),
    ('use_rviz', 'false', 'also start RViz with config/rtmo.rviz'),
    ('use_sim_time', 'false', 'use the /clock topic as time source'),
)


def _is_true(text):
    return text.strip().lower() in ('true', '1', 'yes', 'on')


def _nodes(context):
    """Build the node actions once the launch arguments are known."""
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    params_file = arg['params_file'] or os.path.join(share, 'config', 'pose.yaml')
    overrides = {'autostart': _is_true(arg['autostart']),
                 'use_sim_time': _is_true(arg['use_sim_time'])}
    overrides.update({k: arg[k] for k in ('model', 'backend') if arg[k]})
    if arg['cameras']:
        overrides['cameras'] = [name.strip() for name in arg['cameras'].split(',')]
    if arg['use_depth']:
        overrides['use_depth'] = _is_true(arg['use_depth'])
    respawn = _is_true(arg['respawn'])
    if respawn:
        overrides['autostart_failure'] = 'exit'
    image_topic = arg['image_topic']
    pose_node = LifecycleNode(
        package=PACKAGE, executable='pose_node', name='rtmo_pose',
        namespace=arg['namespace'], output='screen',
        respawn=respawn, respawn_delay=float(arg['respawn_delay']),
        parameters=[params_file, overrides],
        remappings=[('image', image_topic), ('image/compressed', image_topic + '/compressed'),
                    ('depth', arg['depth_topic']), ('camera_info', arg['camera_info_topic'])])
    actions = [pose_node]
    if _is_true(arg['use_rviz']):
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                            arguments=['-d', os.path.join(share, 'config', 'rtmo.rviz')],
                            parameters=[{'use_sim_time': overrides['use_sim_time']}]))
    return actions


def generate_launch_description():
    """Return the launch description: the arguments, then the nodes built from them."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in ARGUMENTS]
    return LaunchDescription(declared + [OpaqueFunction(function=_nodes)])
