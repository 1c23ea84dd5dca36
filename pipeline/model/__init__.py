"""The model: its spec, preprocessing, loading, outputs, CAM graph, inspection and drafted spec."""
