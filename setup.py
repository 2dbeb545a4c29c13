"""rtmo_ros (ament_python) and the companion rtmo_train package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'rtmo_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=['rtmo_ros', 'rtmo_ros.*', 'rtmo_train', 'rtmo_train.*']),
    package_data={'rtmo_ros': ['models/*.onnx', 'models/*.json']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config',
         glob('config/*.yaml') + glob('config/*.rviz') + glob('config/*.xml')),
    ],
    python_requires='>=3.10',
    install_requires=['setuptools', 'numpy', 'scipy', 'opencv-python-headless', 'pyyaml'],
    zip_safe=True,
    maintainer='rtmo_ros maintainers',
    maintainer_email='maintainers@rtmo-ros.dev',
    description='Real-time multi-person 2D human pose estimation (RTMO) for ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'pose_node = rtmo_ros.pose_node:main',
            'rtmo-pose = rtmo_ros.engine.cli:main',
            'rtmo-quantize = rtmo_ros.engine.quantize:main',
            'rtmo-check = rtmo_ros.engine.check:main',
            'rtmo-bag-eval = rtmo_ros.bag_eval:main',
            'rtmo-export = rtmo_train.export:main',
            'rtmo-train = rtmo_train.cli:main',
        ],
    },
)
