"""YAML presets (values only) and the schema they fill (configs/schema.py)."""
