"""The ``lmms_eval.models`` entry point: lmms-eval finds the model ``fastvision`` by this manifest.

Declared in pyproject.toml. lmms-eval (entry points since 0.6; the model needs 0.7.3's chat LLaVA) loads every
manifest of the group while it builds its model registry, so this module imports only the manifest type (and, as
any ``fastvision.*`` import does, the light ``fastvision`` package); the model class itself
(``fastvision.evals.lmms_eval_model``) is imported only when ``--model fastvision`` is asked for.
"""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MANIFEST = ModelManifest(
    model_id="fastvision",
    chat_class_path="fastvision.evals.lmms_eval_model.FastVisionLMMS",
)
