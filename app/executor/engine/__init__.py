"""Engines that run a stage's transform on real data."""
