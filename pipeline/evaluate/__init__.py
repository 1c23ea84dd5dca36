"""How good a model is: metrics, evaluating a split, controlled shifts, the operating point."""
