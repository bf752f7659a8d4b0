"""Thin DVC stage entry points: each reads params.yaml and calls the library."""
