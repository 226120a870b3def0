"""TRecViT against a full-attention ViViT on procedurally generated moving-shape videos."""
