"""One module per model family; importing this package registers every built-in adapter."""

from fastvision.patches import llava  # noqa: F401
