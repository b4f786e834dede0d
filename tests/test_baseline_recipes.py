"""The baselines' training recipes (training/recipes.py): one per method, every value cited,
and each applies to a config that builds the method."""

from __future__ import annotations

import pytest

from iteacnet.config import ExperimentConfig, replace
from iteacnet.models import METHODS, ModelSpec
from iteacnet.training.recipes import RECIPES, apply_recipe

BASELINES = ("ae", "cra", "mmin", "cpmnet", "cpmnet-enc", "gcnet")


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_has_a_cited_recipe(name: str) -> None:
    recipe = RECIPES[name]
    keys = [k for k in recipe.overrides if k != "model.baseline"]
    keys += [f"model.baseline.{k}" for k in recipe.overrides.get("model.baseline", {})]
    assert keys and all(recipe.sources.get(k, "").strip() for k in keys), [k for k in keys if k not in recipe.sources]
    cfg = apply_recipe(replace(ExperimentConfig(), **{"model.method": name}), name)
    assert cfg.train.recipe == name
    for key, value in recipe.overrides.items():  # applied as written
        if key != "model.baseline":
            section, field = key.split(".")
            assert getattr(getattr(cfg, section), field) == value, key
    assert set(recipe.overrides.get("model.baseline", {})) <= set(cfg.model.baseline_kwargs())
    # the options are ones the method knows (an unknown one would raise here)
    METHODS[name](ModelSpec(dims=(("text", 6), ("audio", 4)), num_outputs=3), replace(cfg.model, hidden=8))


def test_recipes_carry_the_reference_codes_values() -> None:
    """The few values the paper's comparison hinges on (Table 5 sizes, schedules)."""
    assert RECIPES["gcnet"].overrides["model.hidden"] == 200
    assert RECIPES["cra"].overrides["model.baseline"]["n_blocks"] == 3
    mmin = RECIPES["mmin"].overrides
    assert mmin["model.baseline"]["pretrain_epochs"] == 100 and mmin["train.epochs"] == 200
    assert {RECIPES[m].overrides["train.batch_unit"] for m in ("ae", "cra", "mmin")} == {"utterances"}
    assert RECIPES["gcnet"].overrides["train.batch_unit"] == "conversations"
