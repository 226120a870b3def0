"""One module per model family; importing this package registers every built-in adapter."""

from fastvision.patches import llava, llava_next, qwen2_vl  # noqa: F401
