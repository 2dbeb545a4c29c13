#!/usr/bin/env bash
# `make setup`: create .venv/ and build rtmo_msgs + rtmo_ros with colcon into install/.
# Idempotent: re-running only installs what changed. With a ROS 2 distro sourced
# (ROS_DISTRO set), that distro's rclpy and messages are used and no ROS wheel is installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"

pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if [ -n "${ROS_DISTRO:-}" ]; then command -v python3; return; fi
  # the ROS 2 Kilted wheels on PyPI are built for CPython 3.11
  for p in python3.11 python3; do command -v "$p" >/dev/null && { command -v "$p"; return; }; done
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(pick_python)"
  echo "[setup] creating $VENV with $PY"
  if [ -n "${ROS_DISTRO:-}" ]; then
    # see the distro's rclpy, message packages and cv_bridge
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

stamp="$VENV/.rtmo-requirements"
want="$(cat requirements/*.txt | sha256sum | cut -c1-16)-${ROS_DISTRO:-wheels}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python requirements"
  if [ -n "${ROS_DISTRO:-}" ]; then
    "${PIP[@]}" -r requirements/python.txt
  else
    "${PIP[@]}" -r requirements/python.txt -r requirements/ros-kilted-wheels.txt
  fi
  "${PIP[@]}" --no-deps -r requirements/bench-nodeps.txt
  echo "$want" > "$stamp"
fi

# xtcocotools' PyPI wheel is built against numpy 1 and fails under numpy 2: build it here
if ! "$VENV/bin/python" -c 'import xtcocotools.cocoeval' 2>/dev/null; then
  echo "[setup] building xtcocotools from source (numpy 2)"
  "${PIP[@]}" --no-build-isolation --no-binary xtcocotools xtcocotools
fi

if [ -z "${ROS_DISTRO:-}" ]; then
  "$VENV/bin/python" scripts/fix_wheel_cmake_paths.py "$VENV"
fi

# the project's own packages, editable, for the console scripts and tests
"${PIP[@]}" --no-deps --no-build-isolation -q -e .

# The ROS 2 client tools PyPI lacks (ros2 launch, ros2 lifecycle, launch_testing, vision_msgs,
# message_filters), for the launch tests: only without a distro (a distro has them) and only
# where ../shared/ros-sources exists (our machines and CI); elsewhere those tests skip.
ROS_SOURCES="${RTMO_ROS_SOURCES:-$ROOT/../shared/ros-sources}"
if [ -z "${ROS_DISTRO:-}" ] && [ -f "$ROS_SOURCES/install.sh" ]; then
  echo "[setup] ROS 2 client tools from $ROS_SOURCES (~4 min the first time)"
  bash "$ROS_SOURCES/install.sh" "$VENV" "$ROOT/build/ros-sources"
fi

echo "[setup] colcon build (rtmo_msgs, rtmo_ros)"
set +u
# shellcheck disable=SC1091
source "$VENV/bin/activate"
set -u
if [ -z "${ROS_DISTRO:-}" ]; then
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
colcon build --base-paths "$ROOT" "$ROOT/rtmo_msgs" --symlink-install \
  --event-handlers console_cohesion- summary+ \
  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python"
echo "[setup] done. Next: source env.sh   (or: make test, make demo)"
