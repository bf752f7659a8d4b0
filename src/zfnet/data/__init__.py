"""Datasets: the synthetic generator, readers of the real layouts, preprocessing into shards."""
