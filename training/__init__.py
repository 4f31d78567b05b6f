"""Training: the loop (loop.py) and its parts: run length per model family, optimizer and schedule, checkpoints, logs, losses (MSE, VGG-19 perceptual, REPA)."""
