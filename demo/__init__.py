"""The incremental demo's logic (session.py): add and remove input views through the scene cache; app.py is its gradio front."""
