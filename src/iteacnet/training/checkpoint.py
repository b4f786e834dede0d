"""Checkpoints: weights as safetensors, the experiment config and metadata as JSON. No pickles.

A checkpoint folder holds
  model.safetensors   the method's weights (best on validation)
  config.json         the ExperimentConfig that produced it
  meta.json           what predict/evaluate need: model spec, standardization, split, scores,
                      and the SHA-256 of model.safetensors (written last: it vouches for the rest)
and, while training, `last/` with everything needed to resume bit for bit (weights, optimizer
state, random generator states incl. CUDA's, the best weights so far): `state-<epoch>.safetensors`
plus `info.json`, the manifest written last that names the state file and its checksum. A kill
at any point leaves the previous manifest pointing at a complete previous state.

Whatever is wrong with a checkpoint (a file missing, truncated, altered, foreign, or not fitting
its config) is a CheckpointError naming the folder and the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from iteacnet.config import RERUN_FREE_FIELDS, ExperimentConfig, config_differences, merge_dicts
from iteacnet.errors import CheckpointError, ConfigError
from iteacnet.files import atomic_write, atomic_write_text


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, str(tmp)))


def _load_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; with `sha256`, only if the file's bytes still match it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    if sha256 is not None and file_sha256(path) != sha256:
        raise CheckpointError(f"{path}: the file's checksum does not match the one recorded when it was "
                              "written: it was altered or damaged after saving")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def save_weights(module: nn.Module, path: Path) -> None:
    _save_tensors(dict(module.state_dict()), path)


def load_weights(module: nn.Module, path: Path, sha256: str | None = None) -> None:
    _load_into(module, _load_tensors(path, sha256), path)


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config builds (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {wrong[:3]}); was config.json or meta.json changed, or the "
            "file taken from another run?"
        )
    module.load_state_dict(state)


def save_checkpoint(folder: Path, module: nn.Module, cfg: ExperimentConfig, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(module, folder / "model.safetensors")
    meta = {**meta, "weights_sha256": file_sha256(folder / "model.safetensors")}
    atomic_write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def check_meta(meta: Any, where: Path) -> dict[str, Any]:
    """meta.json's fields, checked: the model spec, and standardization statistics that are
    finite, of the spec's dimensions, with positive standard deviations."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    spec = meta.get("spec")
    try:
        dims = [(str(m), int(d)) for m, d in spec["dims"]]  # type: ignore[index]
        num_outputs = int(spec["num_outputs"])  # type: ignore[index]
        task = spec["task"]  # type: ignore[index]
        num_speakers = int(spec["num_speakers"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(f"{where}: 'spec' must hold dims [[modality, size], ...], num_outputs, task and "
                              "num_speakers") from None
    if task not in ("classification", "regression") or num_outputs < 1 or num_speakers < 1 or not dims \
            or any(d < 1 for _, d in dims):
        raise CheckpointError(f"{where}: 'spec' is out of range ({spec})")
    std = meta.get("standardization")
    if not isinstance(std, dict):
        raise CheckpointError(f"{where}: 'standardization' must be an object {{modality: {{mean, std}}}}")
    for m, d in dims:
        s = std.get(m)
        if not isinstance(s, dict) or not isinstance(s.get("mean"), list) or not isinstance(s.get("std"), list):
            raise CheckpointError(f"{where}: standardization.{m} must hold 'mean' and 'std' lists")
        for key in ("mean", "std"):
            v = s[key]
            if len(v) != d or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
                raise CheckpointError(f"{where}: standardization.{m}.{key} must be {d} finite numbers")
        if any(x <= 0 for x in s["std"]):
            raise CheckpointError(f"{where}: standardization.{m}.std has a value <= 0 (dividing by it would give "
                                  "NaN or infinite inputs)")
    return meta


def read_checkpoint_files(folder: Path) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config and checked metadata of a checkpoint folder."""
    folder = Path(folder)
    for name in ("model.safetensors", "config.json", "meta.json"):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder} is not an iteacnet checkpoint: {name} is missing")
    body = _read_json(folder / "config.json")
    if not isinstance(body, dict):
        raise CheckpointError(f"{folder / 'config.json'}: expected a JSON object of config sections")
    try:
        cfg = ExperimentConfig.from_dict(body)
    except ConfigError as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
    meta = check_meta(_read_json(folder / "meta.json"), folder / "meta.json")
    return cfg, meta


def load_checkpoint_weights(module: nn.Module, folder: Path, meta: dict[str, Any]) -> None:
    """Load `folder/model.safetensors` into `module`, verifying the checksum meta.json records
    (checkpoints written before checksums were recorded load without the check)."""
    sha = meta.get("weights_sha256")
    load_weights(module, Path(folder) / "model.safetensors", sha if isinstance(sha, str) else None)


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
    cfg: ExperimentConfig | None = None,
) -> None:
    """Everything needed to continue as if never stopped, as one unit: the state goes to a new
    `state-<epoch>.safetensors`, then the manifest `info.json` (naming it, with its checksum and
    the run's config) replaces the old one, then older state files go."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    opt_t, opt_meta = _flatten_optimizer(opt)
    tensors.update(opt_t)
    tensors["rng.batches"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    name = f"state-{int(info.get('epoch', 0))}.safetensors"
    _save_tensors(tensors, folder / name)
    manifest = {**info, "optimizer": opt_meta, "state_file": name, "state_sha256": file_sha256(folder / name)}
    if cfg is not None:
        manifest["config"] = cfg.to_dict()
    atomic_write_text(folder / "info.json", json.dumps(manifest, indent=2))
    clean_stale(folder, keep=name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(folder: Path, keep: str | None = None) -> list[Path]:
    """Remove what a killed writer left in `folder`: temporaries of processes no longer alive
    (`.<name>.<pid>.tmp`) and state files the manifest does not name. Returns what went."""
    gone: list[Path] = []
    if not folder.is_dir():
        return gone
    for p in folder.iterdir():
        parts = p.name.split(".")
        stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp") and len(parts) >= 3 \
            and parts[-2].isdigit() and not _pid_alive(int(parts[-2]))
        old_state = keep is not None and p.name.startswith("state") and p.name.endswith(".safetensors") and p.name != keep
        if stale_tmp or old_state:
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def check_resume_config(folder: Path, cfg: ExperimentConfig) -> None:
    """Refuse to resume a training state written under another config (the optimizer would
    keep the old learning rate, a resized model would not load): name the differing fields."""
    info_path = folder / "info.json"
    if not info_path.is_file():
        return
    saved = _read_json(info_path).get("config")
    if not isinstance(saved, dict):
        return  # a state from before configs were recorded
    # A field added to the config since the state was saved counts at its default.
    diff = config_differences(merge_dicts(ExperimentConfig().to_dict(), saved), cfg.to_dict(), RERUN_FREE_FIELDS)
    if diff:
        raise CheckpointError(
            f"{folder} holds a training state of another configuration ({'; '.join(diff[:6])}"
            f"{'; ...' if len(diff) > 6 else ''}); resume with the same configuration, give another --out, "
            "or --restart to start over"
        )


def load_training_state(
    folder: Path, module: nn.Module, opt: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any]] | None:
    """Restore a state written by `save_training_state`; None if there is none. Leftovers of
    a killed writer, here and in the checkpoint folder above, go first."""
    clean_stale(folder)
    clean_stale(folder.parent)
    if not (folder / "info.json").is_file():
        return None
    info = _read_json(folder / "info.json")
    name = info.pop("state_file", "state.safetensors")  # the older layout had one fixed name
    if not (folder / name).is_file():
        return None
    tensors = _load_tensors(folder / name, info.pop("state_sha256", None))
    info.pop("config", None)
    try:
        module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        opt.load_state_dict(_unflatten_optimizer(tensors, info.pop("optimizer")))
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{folder}: the training state does not fit this model ({_first_line(e)}); "
                              "--restart to start over") from None
    generator.set_state(tensors["rng.batches"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    return best, info


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
