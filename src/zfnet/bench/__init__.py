"""Benchmarks of the library's hot paths (run as ``python -m zfnet.bench.<name>``)."""
