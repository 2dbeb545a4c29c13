"""Test-wide set-up: DDS on loopback with a per-run domain, paths to the shared fixtures."""
import os
import pathlib

import pytest

# Never let a test's DDS discovery leave the machine (see README, "Testing"). The harness
# (scripts/test.sh) sets these too; a plain `pytest` gets them here, before rclpy is imported.
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
os.environ.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 90))

REPO = pathlib.Path(__file__).resolve().parents[1]
PARITY = pathlib.Path(os.environ.get('RTMO_PARITY_DIR', REPO.parent / 'shared' / 'parity'))


@pytest.fixture(scope='session')
def parity_dir():
    """The mmpose 1.3.2 reference fixtures (../shared/parity); tests skip when absent."""
    if not (PARITY / 'rtmo-s_coco_seed1.pth').exists():
        pytest.skip(f'parity fixtures not found in {PARITY}')
    return PARITY
