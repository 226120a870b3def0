"""Parameters and MACs of a registered backbone at its design input size, counted on the meta device (no weights,
no memory): the numbers ``fastvision flops --backbone`` prints and the tests check against the papers."""

from __future__ import annotations

from typing import Any

import torch


def _parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def profile_backbone(name: str) -> dict[str, Any]:
    """Training-form and deployed-form parameters, deployed-form MACs, and the paper's budget when there is one."""
    from fastvision.backbones import create_backbone, reparameterize
    from fastvision.backbones.budgets import PAPER_BUDGETS
    from fastvision.flops.counter import measure_flops

    with torch.device("meta"), torch.no_grad():
        model = create_backbone(name).eval()
        deployed = reparameterize(model)
        size = model.default_cfg["input_size"]
        inputs = model.example_inputs(1) if hasattr(model, "example_inputs") else (torch.empty(1, *size),)
        batchnorm_elements, padded_axis_macs = [0], [0]

        def count_padded_axis(module: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> None:
            # A conv the paper's code runs on a padded dummy axis (VSViG's Conv3d): the MACs of those extra columns.
            per_output = module.weight[0].numel()
            padded_axis_macs[0] += module.official_padded_columns * out.numel() * per_output

        hooks = [
            module.register_forward_hook(
                lambda _m, _i, out: batchnorm_elements.__setitem__(0, batchnorm_elements[0] + out.numel())
            )
            for module in deployed.modules()
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        ]
        hooks += [
            module.register_forward_hook(count_padded_axis)
            for module in deployed.modules()
            if getattr(module, "official_padded_columns", 0)
        ]
        report, _ = measure_flops(lambda: deployed(*inputs))
        for hook in hooks:
            hook.remove()
        train_report, _ = measure_flops(lambda: model(*inputs))
    row: dict[str, Any] = {
        "backbone": name,
        "input_size": list(size),
        "modality": model.default_cfg.get("modality", "image"),
        "params": _parameters(model),
        "deployed_params": _parameters(deployed),
        "macs": report.macs,
        "training_form_macs": train_report.macs,
        "macs_with_batchnorm": report.macs + 2 * batchnorm_elements[0],  # thop's convention: 2 per BN element
    }
    if padded_axis_macs[0]:
        # What the authors' layer layout computes, counted their way (thop: BatchNorm included).
        row["paper_convention_macs"] = row["macs_with_batchnorm"] + padded_axis_macs[0]
    budget = PAPER_BUDGETS.get(name)
    if budget is not None:
        paper_params = budget.params_m * 1e6
        # The paper counts the form it deploys: vHeat in inference mode; RepMLPNet either way (both round the same).
        params = row["deployed_params"]
        row["paper"] = {
            "params": paper_params,
            "macs": None if budget.gmacs is None else budget.gmacs * 1e9,
            "top1": budget.top1,
            "source": budget.source,
            "upper_bound": budget.upper_bound,
            "note": budget.count_note,
        }
        row["params_ratio"] = params / paper_params
        macs = row.get("paper_convention_macs", row["macs"])
        row["macs_ratio"] = None if budget.gmacs is None else macs / (budget.gmacs * 1e9)
        macs_ok = row["macs_ratio"] is None or abs(row["macs_ratio"] - 1) <= budget.macs_tolerance
        if budget.upper_bound:
            row["within_budget"] = params <= paper_params and row["macs"] <= budget.gmacs * 1e9
        else:
            row["within_budget"] = abs(row["params_ratio"] - 1) <= budget.params_tolerance and macs_ok
    return row
