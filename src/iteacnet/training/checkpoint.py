"""Checkpoints: weights as safetensors, the experiment config and metadata as JSON. No pickles.

A checkpoint folder holds
  model.safetensors   the method's weights (best on validation)
  config.json         the ExperimentConfig that produced it
  meta.json           what predict/evaluate need: model spec, standardization, split, scores
and, while training, `last/` with everything needed to resume bit for bit
(weights, optimizer state, random generator states, the best weights so far).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from iteacnet.config import ExperimentConfig
from iteacnet.files import atomic_write, atomic_write_text


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp)))


def save_weights(module: nn.Module, path: Path) -> None:
    _save_tensors(dict(module.state_dict()), path)


def load_weights(module: nn.Module, path: Path) -> None:
    state = load_file(str(path))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def save_checkpoint(folder: Path, module: nn.Module, cfg: ExperimentConfig, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(module, folder / "model.safetensors")
    atomic_write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_checkpoint_files(folder: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    for name in ("model.safetensors", "config.json", "meta.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not an iteacnet checkpoint: {name} is missing")
    cfg = ExperimentConfig.from_json(folder / "config.json")
    meta = json.loads((folder / "meta.json").read_text())
    return cfg, meta


# ---------------------------------------------------------------- resumable training state
def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    folder: Path,
    module: nn.Module,
    best: dict[str, torch.Tensor] | None,
    opt: torch.optim.Optimizer,
    generator: torch.Generator,
    info: dict[str, Any],
) -> None:
    """Everything needed to continue as if never stopped; written atomically (info.json last)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    opt_t, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_t)
    tensors["rng.batches"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    _save_tensors(tensors, folder / "state.safetensors")
    atomic_write_text(folder / "info.json", json.dumps({**info, "optimizer": opt_meta}, indent=2))


def load_training_state(
    folder: Path, module: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]] | None:
    """Restore a state written by `save_training_state`; None if there is none."""
    if not (folder / "info.json").is_file() or not (folder / "state.safetensors").is_file():
        return None
    info = json.loads((folder / "info.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"))
    module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    opt.load_state_dict(_unflatten_optimizer(tensors, info.pop("optimizer")))
    generator.set_state(tensors["rng.batches"])
    torch.set_rng_state(tensors["rng.torch"])
    return best, info
