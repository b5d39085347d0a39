"""Serving a trained model over HTTP: the app of ``mirec serve`` and its web page."""
