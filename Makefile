# deep_vision: two commands do everything on a fresh machine.
#   make demo   set up (once) and run the main job on the built-in synthetic stream
#   make test   set up (once) and run the whole test suite
# `make setup` installs without running anything; .venv/bin/deep-vision is the CLI afterwards.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.deep_vision_setup
SETUP_INPUTS := requirements.txt requirements-ros.txt scripts/setup.sh \
	ros2_ws/src/deep_vision/setup.py ros2_ws/src/deep_vision_msgs/CMakeLists.txt \
	$(wildcard ros2_ws/src/deep_vision_msgs/msg/*.msg)
PYTEST_ARGS ?=

.PHONY: setup demo test clean

setup: $(STAMP)

# Re-runs only when a requirement, the package metadata or a message changes.
$(STAMP): $(SETUP_INPUTS)
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $@

demo: $(STAMP)
	$(VENV)/bin/deep-vision demo

test: $(STAMP)
	DEEP_VISION_REQUIRE_ROS=1 $(VENV)/bin/python -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf build install log demo_output
