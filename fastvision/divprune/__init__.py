"""DivPrune: keep a maximally diverse subset of the image tokens, before the language model (arXiv 2503.02175)."""
