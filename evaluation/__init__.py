"""Evaluation: the papers' protocol (protocol.py), rendering and scoring scenes (scenes.py), the pose check, and a model from a checkpoint (checkpoint.py)."""
