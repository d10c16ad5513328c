"""Viewers of a run: the Rerun recording (:mod:`deep_vision.viz.recorder`)."""
