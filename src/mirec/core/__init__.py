"""The ground floor: the contracts, tensor functions, layers and registry every component
builds on. It imports torch, numpy and the standard library, and nothing of mirec but its
errors (and the config, for types)."""
