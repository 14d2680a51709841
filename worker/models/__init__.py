"""Model loading: the per-process cache, the model store and its manifest."""
