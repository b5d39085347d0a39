"""Hyper-parameter search (``mirec tune``): the search space (:mod:`.space`), the Optuna
study and its trials (:mod:`.study`), and what a search leaves in its folder
(:mod:`.report`). Optuna (the ``tune`` extra) is imported only when a search runs."""
