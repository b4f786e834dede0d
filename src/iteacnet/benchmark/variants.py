"""Named method variants of the paper's tables: each is a set of ModelConfig overrides.

Table 1 (ECCE ablation, teacher on complete data): teacher-ecce-{none,global,both}, plus the
local-stage variants teacher-ecce-both-{shared,drop} (not in the paper).
Table 2 (training frameworks): IME as in the paper (its ITS TF/NAS rows equal Table 3's
ITEACNet rows on all four corpora), UME kept as an extra table: gcnet-tf, its-tf-tf,
its-tf-nas (= iteacnet), ts-nas-tf.
Tables 3/4 (IME/UME): cpmnet, ae, cra, mmin, gcnet, iteacnet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iteacnet.registry import Registry


@dataclass(frozen=True)
class Variant:
    label: str  # as the paper's tables print it
    model: dict[str, Any]  # ModelConfig field overrides
    tables: tuple[int, ...]  # tables the variant appears in
    protocols: tuple[str, ...] = ("ume", "ime")  # "complete" for Table 1


VARIANTS: Registry[Variant] = Registry("method variant")


def _v(name: str, label: str, model: dict[str, Any], tables: tuple[int, ...], protocols: tuple[str, ...] = ("ume", "ime")) -> None:
    VARIANTS.register(name)(Variant(label, model, tables, protocols))


_ITS_NAS = {"method": "iteacnet", "framework": "its", "teacher_kind": "TF", "teacher_layers": 3,
            "student_kind": "NAS", "student_layers": 4}
_v("iteacnet", "ITEACNet", _ITS_NAS, (2, 3, 4))
_v("its-tf-tf", "ITS TF/TF", {**_ITS_NAS, "student_kind": "TF"}, (2,))
_v("gcnet-tf", "GCNet-framework TF/–", {"method": "iteacnet", "framework": "gcnet", "teacher_kind": "TF",
                                        "teacher_layers": 3}, (2,))
_v("ts-nas-tf", "TS NAS/TF", {"method": "iteacnet", "framework": "ts", "teacher_kind": "NAS", "teacher_layers": 4,
                              "student_kind": "TF", "student_layers": 3}, (2,))
for _name, _label in (("cpmnet", "CPM-Net"), ("ae", "AE"), ("cra", "CRA"), ("gcnet", "GCNet")):
    _v(_name, _label, {"method": _name}, (3, 4))
# MMIN's stage 1 (encoders pretrained on complete data); the engine caps it at half the epochs.
_v("mmin", "MMIN", {"method": "mmin", "baseline": {"pretrain_epochs": 10}}, (3, 4))
_TEACHER = {"method": "iteacnet", "framework": "complete", "teacher_kind": "TF", "teacher_layers": 3}
_v("teacher-ecce-none", "Teacher, no ECCE", {**_TEACHER, "ecce": {"enabled": False, "local": False}}, (1,), ("complete",))
_v("teacher-ecce-global", "Teacher, global only", {**_TEACHER, "ecce": {"enabled": True, "local": False}}, (1,), ("complete",))
_v("teacher-ecce-both", "Teacher, local + global", {**_TEACHER, "ecce": {"enabled": True, "local": True}}, (1,), ("complete",))
_v("teacher-ecce-both-shared", "Teacher, local (shared kernel) + global",
   {**_TEACHER, "ecce": {"enabled": True, "local": True, "local_kind": "shared"}}, (1,), ("complete",))
_v("teacher-ecce-both-drop", "Teacher, local (dropout 0.5) + global",
   {**_TEACHER, "ecce": {"enabled": True, "local": True, "local_dropout": 0.5}}, (1,), ("complete",))

TABLE_TITLES: dict[int | str, str] = {
    1: "Table 1: ECCE ablation (teacher on complete data, WAF at rate 0.0)",
    2: "Table 2: training frameworks (IME, as the paper)",
    "2u": "Table 2 (extra): training frameworks under UME",
    3: "Table 3: IME (one model per missing rate)",
    4: "Table 4: UME (one model for every missing rate)",
}


def variants_for_table(table: int) -> list[str]:
    """The variants of the paper's Table `table`; an error for a table no variant belongs to."""
    names = [n for n in VARIANTS if table in VARIANTS[n].tables]
    if not names:
        known = sorted({t for n in VARIANTS for t in VARIANTS[n].tables})
        raise ValueError(f"no variant belongs to table {table!r}; tables: {', '.join(map(str, known))}")
    return names
