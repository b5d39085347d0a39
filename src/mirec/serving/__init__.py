"""Serving a trained model outside training: export for other runtimes."""
