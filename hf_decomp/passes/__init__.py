"""Passes over data: the feature pass, its cache, evaluation, resume state and multi-process sharding."""
