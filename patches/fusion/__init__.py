"""One module per diffusion model that intermediate-fusion attention patches (``uvit.py``: fastvision's U-ViT)."""
