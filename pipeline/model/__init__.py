"""The model: its model.json spec, preprocessing, loading, and the compiled CAM graph."""
