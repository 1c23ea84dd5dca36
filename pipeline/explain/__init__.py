"""Why the model decided: the fused analysis pass, the CAM methods, overlays, neuron statistics."""
