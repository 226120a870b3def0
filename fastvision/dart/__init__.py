"""DART: token reduction by duplication against a few pivot tokens (Wen et al., arXiv 2502.11494)."""
