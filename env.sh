# Source me (bash): activates .venv/ and the colcon install/ of this repository.
#   source env.sh
# Made by `make setup`. With a ROS 2 distro, source the distro's setup.bash first.
_rtmo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -f "$_rtmo_root/.venv/bin/activate" ]; then
  echo "rtmo_ros: no .venv/ in $_rtmo_root - run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_rtmo_root/.venv/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  # ROS 2 from the PyPI wheels: CMake and ament find packages in the venv
  export AMENT_PREFIX_PATH="$_rtmo_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$_rtmo_root/.venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
if [ -z "${ROS_DISTRO:-}" ] && [ -f "$_rtmo_root/build/ros-sources/setup.bash" ]; then
  # launch, launch_ros, ros2cli, message_filters, vision_msgs for tests (make setup, from
  # ../shared/ros-sources when present)
  # shellcheck disable=SC1091
  source "$_rtmo_root/build/ros-sources/setup.bash"
fi
if [ -f "$_rtmo_root/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_rtmo_root/install/setup.bash"
fi
export RTMO_ROS_ROOT="$_rtmo_root"
unset _rtmo_root
