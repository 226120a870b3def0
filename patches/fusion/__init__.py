"""One module per diffusion model that intermediate-fusion attention patches: ``uvit.py`` (fastvision's U-ViT) and
``diffusers_uvit.py`` (diffusers' ``UTransformer2DModel``, UniDiffuser's U-ViT)."""
