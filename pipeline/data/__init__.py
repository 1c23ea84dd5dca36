"""Labelled data: YES/NO folders split leak-free, near-duplicate groups, split loading, tumor outlines."""
