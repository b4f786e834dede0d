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
# Facts from the reference code, cited as "<repo>@<commit> <file>:<line>". GCNet's README
# (README.md:93 GCNet, :111 MMIN stage 1, :114 MMIN stage 2, :120 AE, :126 CRA, :140 CPM-Net)
# gives the command lines GCNet's authors ran; every flag they do not pass takes its default.
# The paper's Table 5 counts are reproduced by these sizes (docs/METHOD-NOTES.md, "Baselines
# and their recipes"). Training-rate regime: not part of a recipe (the paper presets choose it).
_G = "zeroQiaoba/GCNet@c2dfd3b "
_GR = _G + "README.md"
_GM = _G + "baseline-mmin/"
_GC = _G + "baseline-cpmnet/"
_ADAM_DEFAULT_BETAS = "torch.optim.Adam defaults (no betas passed)"


def _baseline_recipe(overrides: dict[str, Any], sources: dict[str, str], note: str) -> Recipe:
    """A recipe whose `model.baseline` options are cited one by one (`model.baseline.<option>`)."""
    options = overrides.get("model.baseline", {})
    missing = [k for k in overrides if k != "model.baseline" and k not in sources]
    missing += [f"model.baseline.{k}" for k in options if f"model.baseline.{k}" not in sources]
    if missing:
        raise ValueError(f"recipe values without a source: {missing}")
    if options:  # the whole option set, for readers that look up `model.baseline` itself
        sources = {**sources, "model.baseline": "; ".join(f"{k}: {sources[f'model.baseline.{k}']}" for k in options)}
    return Recipe(overrides=overrides, sources=sources, note=note)


_MMIN_CODEBASE_TRAIN = {  # AE, CRA and MMIN stage 2 share train_miss.py and its options
    "train.optimizer": "adam",
    "train.lr": 1e-3,
    "train.betas": (0.5, 0.999),
    "train.weight_decay": 0.0,
    "train.grad_clip": 5.0,
    "train.epochs": 100,
    "train.lr_schedule": "linear",
    "train.lr_constant_epochs": 20,
    "train.batch_unit": "utterances",
    "train.batch_size": 256,
    "model.hidden": 128,
    "model.dropout": 0.5,
}


def _mmin_codebase_sources(model_file: str, line_opt: str, line_clip: str, readme: str) -> dict[str, str]:
    return {
        "train.optimizer": f"{_GM}models/{model_file}:{line_opt} torch.optim.Adam",
        "train.lr": f"{_GR}:{readme} --lr=1e-3 (default 2e-4, {_GM}opts/train_opts.py:27)",
        "train.betas": f"{_GM}opts/train_opts.py:26 --beta1 default 0.5, not passed at {_GR}:{readme}; "
                       f"betas=(opt.beta1, 0.999) at models/{model_file}:{line_opt}",
        "train.weight_decay": f"{_GM}models/{model_file}:{line_opt}: Adam without weight_decay",
        "train.grad_clip": f"{_GM}models/{model_file}:{line_clip} clip_grad_norm_(net, 5) per sub-network "
                           "(here one global norm)",
        "train.epochs": f"{_GR}:{readme} --niter=20 --niter_decay=80; {_GM}train_miss.py epochs "
                        "range(epoch_count=1, niter+niter_decay+1)",
        "train.lr_schedule": f"{_GM}opts/train_opts.py:28 lr_policy 'linear'; {_GM}models/networks/tools.py:48-51",
        "train.lr_constant_epochs": f"{_GR}:{readme} --niter=20 (tools.py:50: 1 - max(0, e+1-niter)/(niter_decay+1))",
        "train.batch_unit": f"{_GM}train_miss.py: utterance-level datasets (*_miss_dataset.py), no conversations",
        "train.batch_size": f"{_GR}:{readme} --batch_size=256",
        "model.hidden": f"{_GR}:{readme} --embd_size_a/v/l=128 --cls_layers=128,128",
        "model.dropout": f"{_GR}:{readme} --dropout_rate=0.5",
    }


RECIPES.register("gcnet")(_baseline_recipe(
    overrides={
        "train.optimizer": "adam", "train.lr": 1e-3, "train.betas": (0.9, 0.999), "train.weight_decay": 1e-5,
        "train.grad_clip": 0.0, "train.epochs": 100, "train.lr_schedule": "constant",
        "train.batch_unit": "conversations", "train.batch_size": 32, "model.hidden": 200, "model.dropout": 0.5,
        "model.baseline": {"window_past": 2, "window_future": 2, "base_model": "lstm", "rec_weight": 1.0,
                           "graph_hidden": None},
    },
    sources={
        "train.optimizer": _G + "gcnet/train_gcnet.py:500 optim.Adam(model.parameters(), lr, weight_decay=args.l2)",
        "train.lr": _GR + ":93 --lr=0.001 (default 0.0001, gcnet/train_gcnet.py:429)",
        "train.betas": _ADAM_DEFAULT_BETAS + ", gcnet/train_gcnet.py:500",
        "train.weight_decay": _G + "gcnet/train_gcnet.py:430 --l2 default 0.00001, passed as weight_decay at :500",
        "train.grad_clip": _G + "gcnet/train_gcnet.py:380-382 loss.backward(); optimizer.step(): no clipping",
        "train.epochs": _GR + ":93 --epoch=100 (default 100, gcnet/train_gcnet.py:433)",
        "train.lr_schedule": _G + "gcnet/train_gcnet.py: no scheduler",
        "train.batch_unit": _G + "gcnet/train_gcnet.py:28-121 DataLoader over conversations (collate_fn pads them)",
        "train.batch_size": _G + "gcnet/train_gcnet.py:432 --batch-size default 32 (README.md:93 passes none)",
        "model.hidden": _GR + ":93 --hidden=200 (run.sh also runs 100 at some rates)",
        "model.dropout": _G + "gcnet/train_gcnet.py:431 --dropout default 0.5",
        "model.baseline.window_past": _GR + ":93 --windowp=2",
        "model.baseline.window_future": _GR + ":93 --windowf=2",
        "model.baseline.base_model": _GR + ":93 --base-model='LSTM' (the GRU branch, gcnet/model.py:137, reads an "
                                     "undefined name)",
        "model.baseline.rec_weight": _G + "gcnet/train_gcnet.py:368 loss = loss1 + loss2 with --loss-recon (README.md:93)",
        "model.baseline.graph_hidden": _G + "gcnet/train_gcnet.py:126 graph_h = args.hidden // 2 (None: hidden // 2)",
    },
    note="GCNet trains at one constant mask rate (--mask-type constant-x, train_gcnet.py:436, :509), the rate it "
         "is tested at; --time-attn is off (train_gcnet.py:420, not passed at README.md:93).",
))

RECIPES.register("ae")(_baseline_recipe(
    overrides={**_MMIN_CODEBASE_TRAIN,
               "model.baseline": {"ae_layers": (256, 128), "rec_weight": 0.2, "rec_batch": 256, "init": "normal"}},
    sources={**_mmin_codebase_sources("mmin_AE_model.py", "70", "149-150", "120"),
             "model.baseline.ae_layers": _GR + ":120 --AE_layers=256,128 (SimpleFcAE, mmin_AE_model.py:64)",
             "model.baseline.rec_weight": _GR + ":120 --mse_weight=0.2 (--ce_weight=1.0); mmin_AE_model.py:143",
             "model.baseline.rec_batch": _GM + "models/mmin_AE_model.py:138 L_rec summed over the batch of "
                                         "--batch_size=256 (README.md:120)",
             "model.baseline.init": _GR + ":120 --init_type normal; " + _GM + "models/networks/tools.py:64-89 "
                                    "N(0, init_gain 0.02), applied to every net by models/base_model.py:84-86"},
    note="AE of MMIN's code base as GCNet runs it (train_miss.py --model=mmin_AE).",
))

RECIPES.register("cra")(_baseline_recipe(
    overrides={**_MMIN_CODEBASE_TRAIN,
               "model.baseline": {"ae_layers": (256, 128), "n_blocks": 3, "rec_weight": 0.8, "rec_batch": 256,
                                  "init": "normal"}},
    sources={**_mmin_codebase_sources("mmin_CRA_model.py", "71", "152-153", "126"),
             "model.baseline.ae_layers": _GR + ":126 --AE_layers=256,128 (ResidualAE, mmin_CRA_model.py:65)",
             "model.baseline.n_blocks": _GM + "models/mmin_CRA_model.py:36 --n_blocks default 3, the size behind "
                                        "the paper's Table 5 (2.11M); GCNet's runs pass --n_blocks=2 (README.md:126)",
             "model.baseline.rec_weight": _GR + ":126 --mse_weight=0.8 (--ce_weight=1.0); mmin_CRA_model.py:146",
             "model.baseline.rec_batch": _GM + "models/mmin_CRA_model.py:141 L_rec summed over the batch of "
                                         "--batch_size=256 (README.md:126)",
             "model.baseline.init": _GR + ":126 --init_type normal; " + _GM + "models/networks/tools.py:64-89, "
                                    "models/base_model.py:84-86"},
    note="CRA of MMIN's code base (train_miss.py --model=mmin_CRA), 3 residual blocks as the paper counts it.",
))

RECIPES.register("mmin")(_baseline_recipe(
    overrides={**_MMIN_CODEBASE_TRAIN,
               # stage 1 (100 epochs) + stage 2 (100 epochs); one linear schedule whose last 80
               # epochs are stage 2's decay (stage 1 keeps a constant lr: see the recipe note)
               "train.epochs": 200, "train.lr_constant_epochs": 120,
               "model.baseline": {"pretrain_epochs": 100, "pretrain_dropout": 0.3, "ae_layers": (256, 128, 64),
                                  "n_blocks": 5, "ce_weight": 1.0, "mse_weight": 4.0, "cycle_weight": 2.0,
                                  "init": "reference"}},
    sources={**_mmin_codebase_sources("mmin_model.py", "87", "201-202", "114"),
             "train.epochs": _GR + ":111 stage 1 --niter=20 --niter_decay=80, then :114 stage 2 the same: 100 + 100",
             "train.lr_constant_epochs": _GR + ":114 stage 2 --niter=20 --niter_decay=80: constant for 100 + 20 "
                                         "epochs, linear decay over the last 80",
             "model.baseline.pretrain_epochs": _GR + ":111 utt_fusion --niter=20 --niter_decay=80 (100 epochs)",
             "model.baseline.pretrain_dropout": _GR + ":111 utt_fusion --dropout_rate=0.3",
             "model.baseline.ae_layers": _GR + ":114 --AE_layers=256,128,64 (mmin_model.py:72-73, two ResidualAE)",
             "model.baseline.n_blocks": _GR + ":114 --n_blocks=5",
             "model.baseline.ce_weight": _GR + ":114 --ce_weight=1.0 (mmin_model.py:196)",
             "model.baseline.mse_weight": _GR + ":114 --mse_weight=4.0 (mmin_model.py:197)",
             "model.baseline.cycle_weight": _GR + ":114 --cycle_weight=2.0 (mmin_model.py:198)",
             "model.baseline.init": _GR + ":111 stage 1 --init_type kaiming, :114 stage 2 --init_type normal "
                                    "(the stage-2 encoders then load stage 1's weights, mmin_model.py:118-120); "
                                    + _GM + "models/networks/tools.py:64-89, models/base_model.py:84-86"},
    note="Stage 1 (utt_fusion, README.md:111) differs from stage 2 in beta1 (0.9 vs 0.5), dropout (0.3 vs 0.5), "
         "init (kaiming vs normal) and its own lr schedule and optimizer; this engine runs both stages with one "
         "optimizer and schedule (stage 2's betas), the dropout switching with the stage.",
))

RECIPES.register("cpmnet")(_baseline_recipe(
    overrides={
        "train.optimizer": "adam", "train.lr": 1e-3, "train.betas": (0.9, 0.999), "train.weight_decay": 0.0,
        "train.grad_clip": 0.0, "train.epochs": 150, "train.eval_every": 5, "train.lr_schedule": "constant",
        "train.batch_unit": "utterances", "train.batch_size": 1_000_000, "model.hidden": 128, "model.dropout": 0.0,
        "model.baseline": {"lamb": 1.0, "code_lr": 0.01, "code_steps": 1, "test_lr": 0.001, "test_steps": 1500},
    },
    sources={
        "train.optimizer": _GC + "util/model.py:70-71 tf.train.AdamOptimizer on the decoders (net step)",
        "train.lr": _GC + "test_lianzheng.py:52 learning_rate[0] = 0.001, used at util/model.py:70",
        "train.betas": _GC + "util/model.py:70 TensorFlow AdamOptimizer defaults (0.9, 0.999)",
        "train.weight_decay": _GC + "util/model.py:63-71: no regulariser",
        "train.grad_clip": _GC + "util/model.py:70-71: minimize() without clipping",
        "train.epochs": _GR + ":140 --epochs-train=30, × 5 net steps per epoch (util/model.py:165, :177): "
                        "150 steps, one per engine epoch (one batch)",
        "train.eval_every": _GC + "util/model.py:175-186: 5 net + 5 code steps make one original epoch",
        "train.lr_schedule": _GC + "util/model.py: constant learning rates",
        "train.batch_unit": _GC + "util/model.py:167-174 one feed_dict of every training utterance",
        "train.batch_size": _GC + "util/model.py:167-174 the whole training split is one batch",
        "model.hidden": _GR + ":140 --lsd-dim=128",
        "model.dropout": _GC + "util/model.py:97-102 one-layer decoders: no dropout",
        "model.baseline.lamb": _GR + ":140 --lamb=1 (default 10, test_lianzheng.py:23)",
        "model.baseline.code_lr": _GC + "test_lianzheng.py:52 learning_rate[1] = 0.01, util/model.py:75-76",
        "model.baseline.code_steps": _GC + "util/model.py:165 step=[5, 5]: as many code steps as net steps",
        "model.baseline.test_lr": _GC + "test_lianzheng.py:52 learning_rate[0] = 0.001, util/model.py:80-81",
        "model.baseline.test_steps": _GR + ":140 --epochs-test=300 × 5 steps (util/model.py:197-198)",
    },
    note="Original CPM-Net: per-utterance codes, test codes fit at prediction time; classification by the mean "
         "training code per class (util/classfiy.py:31-46).",
))

RECIPES.register("cpmnet-enc")(_baseline_recipe(
    overrides={
        "train.optimizer": "adam", "train.lr": 1e-3, "train.betas": (0.9, 0.999), "train.weight_decay": 0.0,
        "train.grad_clip": 0.0, "train.epochs": 100, "train.lr_schedule": "constant",
        "train.batch_unit": "utterances", "train.batch_size": 256, "model.hidden": 128, "model.dropout": 0.0,
        "model.baseline": {"lamb": 1.0},
    },
    sources={
        "train.optimizer": _GC + "util/model.py:70 Adam (the original's net step)",
        "train.lr": _GC + "test_lianzheng.py:52 learning_rate[0] = 0.001",
        "train.betas": _GC + "util/model.py:70 TensorFlow AdamOptimizer defaults",
        "train.weight_decay": _GC + "util/model.py: no regulariser",
        "train.grad_clip": _GC + "util/model.py: no clipping",
        "train.epochs": "no reference: a redesign (encoder + unrolled inference); 100 epochs as the other baselines",
        "train.lr_schedule": _GC + "util/model.py: constant learning rates",
        "train.batch_unit": "no reference: the redesign trains on mini-batches of utterances",
        "train.batch_size": "no reference: 256 utterances, as MMIN's code base",
        "model.hidden": _GR + ":140 --lsd-dim=128",
        "model.dropout": _GC + "util/model.py:97-102: no dropout",
        "model.baseline.lamb": _GR + ":140 --lamb=1",
    },
    note="Amortised redesign of CPM-Net (not the original method); see models/baselines/cpmnet_enc.py.",
))
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
