import json

import pytest

from iteacnet.config import ECCEConfig, ExperimentConfig, ModelConfig, parse_override, replace


def test_json_round_trip(tmp_path):
    cfg = ExperimentConfig(model=ModelConfig(baseline=(("pretrain_epochs", 3),), ecce=ECCEConfig(local=False)))
    cfg.to_json(tmp_path / "c.json")
    back = ExperimentConfig.from_json(tmp_path / "c.json")
    assert back == cfg
    assert back.model.baseline_kwargs() == {"pretrain_epochs": 3}


def test_unknown_field_is_an_error():
    d = ExperimentConfig().to_dict()
    d["train"]["epoch"] = 3  # typo
    with pytest.raises(ValueError, match="epoch"):
        ExperimentConfig.from_dict(d)


def test_override_parses_json_values():
    cfg = parse_override(ExperimentConfig(), "train.epochs=7")
    cfg = parse_override(cfg, "eval.rates=[0.0, 0.5]")
    cfg = parse_override(cfg, "model.student_kind=TF")
    assert cfg.train.epochs == 7 and cfg.eval.rates == (0.0, 0.5) and cfg.model.student_kind == "TF"
    with pytest.raises(ValueError, match="unknown config field"):
        parse_override(cfg, "train.nope=1")


def test_dotted_replace_keeps_the_rest():
    cfg = replace(ExperimentConfig(), **{"train.seed": 5, "model.ecce.max_span": 10})
    assert cfg.train.seed == 5 and cfg.model.ecce.max_span == 10 and cfg.model.ecce.kernel == 7
    assert json.loads(json.dumps(cfg.to_dict()))["model"]["ecce"]["max_span"] == 10
