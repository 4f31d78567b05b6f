"""Scene and object datasets, view samplers, the evaluation index and the scene-format readers."""
