"""Training: augmentation, architectures, CAM guidance, the training loop and the model card."""
