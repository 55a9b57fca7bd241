"""Evaluation of frozen backbones: DINOv2-style linear probing and kNN, on cached features."""
