"""Why the model decided: the fused pass, CAM methods, overlays, neurons, in-distribution scores."""
