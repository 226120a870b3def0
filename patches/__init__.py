"""One module per model family; importing this package registers every built-in adapter."""

from fastvision.patches import aya_vision, gemma3, internvl, llava, llava_next, mistral3, qwen2_vl, qwen3_vl  # noqa: F401
