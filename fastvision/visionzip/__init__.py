"""VisionZip: dominant and contextual visual tokens, chosen in the vision tower (arXiv 2412.04467)."""
