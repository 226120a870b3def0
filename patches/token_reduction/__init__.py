"""One adapter per VLM family for the token-reduction engine; importing this package registers them all."""

from fastvision.patches.token_reduction import (  # noqa: F401
    aya_vision,
    gemma3,
    internvl,
    llava,
    llava_next,
    mistral3,
    qwen2_vl,
    qwen3_vl,
)
