"""Files in and out, TensorFlow-free: scans (images, DICOM), heatmaps and array files."""
