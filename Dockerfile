# deep_vision image: ROS 2 + CUDA + TensorRT, workspace built with colcon.
#   desktop (x86_64):  docker build -t deep_vision .
#   Jetson (L4T r36):  docker build --build-arg TARGET=jetson -t deep_vision:jetson .
# Not built on the project's machines (no Docker engine there).
ARG TARGET=desktop

# ---- desktop: official ROS 2 Jazzy image (Ubuntu 24.04) + CUDA 12 runtime + TensorRT 10 ----
FROM ros:jazzy-ros-base AS base-desktop
ARG CUDA_REPO=https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && curl -fsSL "${CUDA_REPO}/cuda-keyring_1.1-1_all.deb" -o /tmp/cuda-keyring.deb \
    && dpkg -i /tmp/cuda-keyring.deb && rm /tmp/cuda-keyring.deb \
    && apt-get update && apt-get install -y --no-install-recommends \
       cuda-cudart-12-8 libcublas-12-8 libnvinfer10 libnvinfer-plugin10 libnvonnxparsers10 python3-libnvinfer \
    && rm -rf /var/lib/apt/lists/*

# ---- Jetson: NVIDIA L4T JetPack 6 (Ubuntu 22.04, CUDA + TensorRT included) + ROS 2 Humble ----
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0 AS base-jetson
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV ROS_DISTRO=humble
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates gnupg lsb-release \
    && curl -fsSL https://raw.githubusercontent.com/ros/rosdistro/master/ros.key -o /usr/share/keyrings/ros-archive-keyring.gpg \
    && echo "deb [arch=arm64 signed-by=/usr/share/keyrings/ros-archive-keyring.gpg] http://packages.ros.org/ros2/ubuntu $(lsb_release -cs) main" \
       > /etc/apt/sources.list.d/ros2.list \
    && apt-get update && apt-get install -y --no-install-recommends ros-humble-ros-base python3-colcon-common-extensions \
    && rm -rf /var/lib/apt/lists/*

# ---- common: dependencies, workspace build ----
# hadolint ignore=DL3006
FROM base-${TARGET} AS final
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update && apt-get install -y --no-install-recommends \
       python3-venv python3-dev python3-pip build-essential cmake \
       "ros-${ROS_DISTRO}-rosidl-default-generators" "ros-${ROS_DISTRO}-tf2-ros" "ros-${ROS_DISTRO}-cv-bridge" \
       "ros-${ROS_DISTRO}-rosbag2-storage-mcap" \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/deep_vision
COPY . .
# setup.sh sees the sourced ROS (ROS_DISTRO) and builds deep_vision_msgs against it.
RUN source "/opt/ros/${ROS_DISTRO}/setup.bash" && bash scripts/setup.sh \
    && source "/opt/ros/${ROS_DISTRO}/setup.bash" \
    && colcon build --base-paths ros2_ws/src --install-base /opt/deep_vision/install
ENV PATH=/opt/deep_vision/.venv/bin:${PATH}
RUN printf 'source /opt/ros/%s/setup.bash\nsource /opt/deep_vision/install/setup.bash\n' "${ROS_DISTRO}" >> /etc/bash.bashrc
# The perception nodes on /camera/image_raw (+ camera_info), e.g. from a camera driver or `ros2 bag play`
# on the host network:  docker run --rm --net host --gpus all deep_vision
# The offline demo instead:  docker run --rm deep_vision deep-vision demo
ENTRYPOINT ["/bin/bash", "-lc", "source /opt/ros/${ROS_DISTRO}/setup.bash && source /opt/deep_vision/install/setup.bash && exec \"$0\" \"$@\""]
CMD ["ros2", "launch", "deep_vision", "perception.launch.py"]
