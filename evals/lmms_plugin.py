"""The ``lmms_eval.models`` entry point: lmms-eval (v0.6 and later) finds the model ``fastvision`` by this manifest.

Declared in pyproject.toml. lmms-eval loads every manifest of the group while it builds its model registry, so this
module imports nothing but the manifest type; the model class itself (``fastvision.evals.lmms_eval_model``) is
imported only when ``--model fastvision`` is asked for.
"""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MANIFEST = ModelManifest(
    model_id="fastvision",
    chat_class_path="fastvision.evals.lmms_eval_model.FastVisionLMMS",
)
