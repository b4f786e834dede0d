"""Training recipes: how each method's reference code trains it, registered with the method.

A recipe is a set of ExperimentConfig overrides (dotted keys: `train.lr`, `model.hidden`,
`model.baseline`, ...) with the source of every value (repository, file, line). The paper
presets ask for each method's own recipe (`train.recipe="own"`); `train.recipe="shared"`
trains every method with the fields as given (a controlled comparison on one recipe).

Resolution order (`resolve_recipe`): defaults → preset → recipe of the final method →
explicit `--set` overrides, so a user's override always wins. A resolved config carries the
recipe's name in `train.recipe`, which every result row records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iteacnet.config import ExperimentConfig, replace
from iteacnet.registry import Registry


@dataclass(frozen=True)
class Recipe:
    overrides: dict[str, Any]  # dotted ExperimentConfig key -> value
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> "repo file:line" (or reasoning)
    note: str = ""


# Keyed by method name (the METHODS registry's keys).
RECIPES: Registry[Recipe] = Registry("training recipe")

# The paper's own setup (METHOD.md §8; paper "Setup"): AdamW, lr 5e-4, router 5e-3, batch of
# 32 conversations, 100 epochs, D = 128.
_PAPER_SETUP = "paper, Setup paragraph (paper/000_cbe27d937864f31f.txt line 166); METHOD.md §8"
_NOT_GIVEN = "not given by the paper; AdamW's default (torch), see docs/METHOD-NOTES.md"
RECIPES.register("iteacnet")(Recipe(
    overrides={"train.optimizer": "adamw", "train.lr": 5e-4, "train.router_lr": 5e-3, "train.batch_size": 32,
               "train.batch_unit": "conversations", "train.epochs": 100, "model.hidden": 128,
               "train.weight_decay": 1e-2, "train.grad_clip": 5.0, "train.lr_schedule": "constant"},
    sources={**{k: _PAPER_SETUP for k in ("train.optimizer", "train.lr", "train.router_lr", "train.batch_size",
                                          "train.epochs", "model.hidden")},
             "train.batch_unit": "paper line 30: a sample is a whole conversation; METHOD.md §1",
             "train.weight_decay": _NOT_GIVEN,
             "train.grad_clip": "not given by the paper; ours (docs/METHOD-NOTES.md)",
             "train.lr_schedule": "the paper names no schedule"},
))

# ---- baselines' recipes: registered in the section below -----------------------------------
# BEGIN BASELINE RECIPES
# END BASELINE RECIPES


def recipe_names() -> list[str]:
    return RECIPES.names()


def apply_recipe(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """`cfg` with recipe `name`'s overrides applied and `train.recipe` set to `name`."""
    over = dict(RECIPES[name].overrides)
    model_baseline = over.pop("model.baseline", None)
    cfg = replace(cfg, **over, **{"train.recipe": name})
    if model_baseline is not None:  # merged into the options already set (a variant's)
        merged = {**cfg.model.baseline_kwargs(), **dict(model_baseline)}
        cfg = replace(cfg, **{"model.baseline": tuple(sorted(merged.items()))})
    return cfg


def resolve_recipe(
    cfg: ExperimentConfig, reapply: Callable[[ExperimentConfig], ExperimentConfig] | None = None
) -> ExperimentConfig:
    """Resolve `train.recipe="own"` into the method's recipe; then `reapply` (the user's
    explicit overrides) so that they win. "shared" or an already resolved name is left alone."""
    if cfg.train.recipe != "own":
        return cfg
    if cfg.model.method not in RECIPES:
        raise ValueError(f"train.recipe='own': method {cfg.model.method!r} has no registered recipe; "
                         f"recipes: {', '.join(RECIPES.names())}")
    out = apply_recipe(cfg, cfg.model.method)
    return reapply(out) if reapply is not None else out
