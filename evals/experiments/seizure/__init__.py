"""VSViG-Light on synthetic skeleton recordings with seizures, streamed through the decision rule."""
