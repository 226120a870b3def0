"""FastV visual-token pruning (Chen et al., arXiv 2403.06764): config, engine, scoring and selection."""
