"""Per-model code of fastvision's methods, one subpackage per kind of method.

- ``token_reduction/``: one adapter per VLM family (LLaVA, Qwen2-VL, ...) for the token-reduction methods (FastV and
  its baselines). An adapter patches nothing itself: it tells the engine where a family keeps its decoder layers,
  its image tokens and its text backbone. Importing the subpackage registers every built-in adapter.
- ``fusion/``: one patch per diffusion model for intermediate-fusion attention (``uvit.py``: fastvision's U-ViT).
"""
