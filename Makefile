# deep_vision: two commands do everything on a fresh machine.
#   make demo   set up (once) and run the main job on the built-in synthetic stream
#   make test   set up (once) and run the whole test suite
#   make mutation  mutation testing of the core modules (slow, hours; outside make test): mutation/run.py
# `make setup` installs without running anything; .venv/bin/deep-vision is the CLI afterwards.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.deep_vision_setup
SETUP_INPUTS := requirements.txt requirements-ros.txt scripts/setup.sh \
	ros2_ws/src/deep_vision/setup.py ros2_ws/src/deep_vision_msgs/CMakeLists.txt \
	$(wildcard ros2_ws/src/deep_vision_msgs/msg/*.msg)
PYTEST_ARGS ?=

.PHONY: setup demo test mutation clean

setup: $(STAMP)

# Re-runs only when a requirement, the package metadata or a message changes.
$(STAMP): $(SETUP_INPUTS)
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $@

demo: $(STAMP)
	$(VENV)/bin/deep-vision demo

test: $(STAMP)
	DEEP_VISION_REQUIRE_ROS=1 $(VENV)/bin/python -m pytest tests $(PYTEST_ARGS)

# The audit's known mutants first (each must be killed), then Cosmic Ray's sessions (resumable).
mutation: $(STAMP)
	$(VENV)/bin/python -m pip install -q -r requirements-mutation.txt
	$(VENV)/bin/python mutation/known_mutants.py
	$(VENV)/bin/python mutation/run.py

clean:
	rm -rf build install log demo_output
