"""Labelled data: leak-free splits, near-duplicate groups, split loading, outlines, label review."""
