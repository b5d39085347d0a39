"""Serving a trained model folder: the HTTP API of ``mirec serve``."""
