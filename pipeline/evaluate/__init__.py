"""How good a model is: classification and localisation metrics, and the evaluation of a split."""
