"""Pure compute, in rooms by concern: io, data, model, explain, evaluate, train (docs/design.md)."""
