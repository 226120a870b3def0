"""Early against intermediate fusion in a small U-ViT text-to-image model (arXiv 2403.16530), on CPU."""
