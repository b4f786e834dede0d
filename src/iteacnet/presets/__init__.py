"""Named experiment presets (the JSON files beside this module) and config loading.

Below the CLI and training (both import it; it imports only `config`): a preset name, a
`--config` file and `--set` overrides become one validated `ExperimentConfig`. A user's own
`./configs/<name>.json` in the working folder counts before the packaged preset of that name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iteacnet.config import ExperimentConfig, merge_dicts, set_override
from iteacnet.errors import ConfigError

PACKAGE_PRESETS = Path(__file__).resolve().parent


def preset_dirs() -> tuple[Path, ...]:
    """Where presets are looked up, first match wins: ./configs, then the packaged ones."""
    return (Path.cwd() / "configs", PACKAGE_PRESETS)


def list_presets() -> list[str]:
    seen: list[str] = []
    for d in preset_dirs():
        if d.is_dir():
            seen.extend(p.stem for p in sorted(d.glob("*.json")) if p.stem not in seen)
    return seen


def find_preset(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".json" and p.is_file():
        return p
    for d in preset_dirs():
        if (d / f"{name}.json").is_file():
            return d / f"{name}.json"
    raise ConfigError(f"no preset {name!r}; presets: {', '.join(list_presets()) or '(none found)'}")


def read_json_file(path: Path, what: str = "config file") -> Any:
    """A JSON file's content, or a ConfigError naming the file (and line) that is not JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable {what} ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno} column {e.colno}: malformed JSON ({e.msg})") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply") from None


def read_config_body(path: Path) -> dict[str, Any]:
    body = read_json_file(path)
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: expected a JSON object of config sections, got {type(body).__name__}")
    return body


def load_config(preset: str | None, config: str | None, overrides: list[str]) -> ExperimentConfig:
    """Defaults, then the preset, then the `--config` file, then the overrides; validated."""
    d = ExperimentConfig().to_dict()
    for src in (find_preset(preset) if preset else None, Path(config) if config else None):
        if src is not None:
            body = dict(read_config_body(src))
            body.pop("grid", None)  # benchmark presets carry a grid section
            d = merge_dicts(d, body)
            try:
                ExperimentConfig.from_dict(d)
            except ConfigError as e:
                raise ConfigError(f"{src}: {e}") from None
    return apply_overrides(ExperimentConfig.from_dict(d), overrides)


def overrides_of(overrides: list[str] | None, field: str) -> list[str]:
    """The `--set` overrides that set `field` (e.g. "train.device")."""
    return [o for o in overrides or [] if o.split("=", 1)[0] == field]


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """`--set SECTION.FIELD=VALUE` overrides, in order. Validation waits for the last one, so
    fields that constrain each other (model.hidden and model.heads) can change together."""
    if not overrides:
        return cfg
    d = cfg.to_dict()
    for o in overrides:
        d = set_override(d, o)
    try:
        return ExperimentConfig.from_dict(d)
    except ConfigError as e:
        field = str(e).split(":", 1)[0]
        culprit = overrides_of(overrides, field) or overrides
        raise ConfigError(f"--set {culprit[-1] if len(culprit) == 1 else ' '.join(culprit)!r}: {e}") from None


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ConfigError(f"{flag} takes comma-separated integers, got {text!r}")
    return seeds
