"""Retrieval over the whole catalogue, on top of the aggregators: the one top-N path of the
evaluator, inspection and ``Recommender`` (``ranking``), ComiRec's diversity-controllable
merge (``diversity_greedy``), the per-user number of interests at inference
(``adaptive_k``), and faiss item indexes whose candidates that path ranks (``ann``)."""
