"""Training: augmentation, architectures, guidance, the loop, the card, the training distribution."""
