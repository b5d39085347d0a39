"""Serving a trained model: export for other runtimes, the HTTP app of ``mirec serve`` and
its web page."""
