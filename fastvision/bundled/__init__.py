"""The bundled easy-VQA LLaVA checkpoint (``fastvision/bundled/easyvqa-llava``) and the recipe that trains it."""

from pathlib import Path

BUNDLED_MODEL = Path(__file__).resolve().parent / "easyvqa-llava"
