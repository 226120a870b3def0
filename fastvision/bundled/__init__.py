"""The bundled checkpoints (``easyvqa-llava``, ``digits-llava``) and the seeded recipes that train them."""

from pathlib import Path

BUNDLED_MODEL = Path(__file__).resolve().parent / "easyvqa-llava"
BUNDLED_DIGITS_MODEL = Path(__file__).resolve().parent / "digits-llava"
