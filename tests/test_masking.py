"""Missing-modality masks: the sampler's invariants (hypothesis), fixed masks, patterns, storage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iteacnet.masking import (
    PATTERNS,
    achieved_rate,
    fixed_mask,
    load_masks,
    missing_target,
    pattern_mask,
    patterns_for,
    sample_mask,
    save_masks,
    stable_seed,
)

MODS = ("text", "audio", "visual")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@st.composite
def mask_problem(draw: st.DrawFn) -> dict:
    """A random shape ((N,) or (B, T)), valid mask, M, rate, seed and optional availability."""
    m = draw(st.integers(1, 3))
    if draw(st.booleans()):
        shape: tuple[int, ...] = (draw(st.integers(0, 40)),)
    else:
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 12)))
    n = int(np.prod(shape))
    valid = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool).reshape(shape)
    avail = None
    if draw(st.booleans()):
        cells = draw(st.lists(st.booleans(), min_size=n * m, max_size=n * m))
        avail = np.array(cells, dtype=bool).reshape(*shape, m)
    rate = draw(st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.7, 1.0]), st.floats(0.0, 1.0)))
    seed = draw(st.integers(0, 2**31))
    return {"m": m, "valid": valid, "avail": avail, "rate": rate, "seed": seed}


def expected_missing(valid: np.ndarray, avail: np.ndarray | None, m: int, rate: float) -> int:
    """Missing cells the spec asks for: the target, but at least the unavailable cells and at
    most what leaves one available modality per utterance."""
    n_valid = int(valid.sum())
    target = missing_target(n_valid, m, rate)
    if avail is None:
        return target
    a = avail[valid]
    unavailable = int((~a).sum())
    removable = int((a.sum(1) - 1).clip(min=0).sum())
    return unavailable + min(max(0, target - unavailable), removable)


@settings(max_examples=150, deadline=None)
@given(mask_problem())
def test_sampler_invariants(p: dict) -> None:
    valid, avail, m, rate = p["valid"], p["avail"], p["m"], p["rate"]
    t_avail = None if avail is None else torch.from_numpy(avail)
    mask = sample_mask(torch.from_numpy(valid), m, rate, gen(p["seed"]), t_avail).numpy()
    assert mask.shape == (*valid.shape, m) and mask.dtype == bool
    assert not mask[~valid].any(), "padding must be all False"
    n_valid = int(valid.sum())
    missing = n_valid * m - int(mask[valid].sum())
    assert missing == expected_missing(valid, avail, m, rate)
    if avail is None:
        assert (mask[valid].sum(-1) >= 1).all(), "every valid utterance keeps a modality"
        if n_valid:
            # Achieved rate = target up to rounding (half a cell), or the cap.
            want = min(rate, (m - 1) / m)
            assert abs(achieved_rate(mask, valid) - want) <= 0.5 / (n_valid * m) + 1e-12
    else:
        assert not (mask & ~avail).any(), "an unavailable modality cannot be present"
        has_any = avail[valid].any(-1)
        assert (mask[valid].sum(-1)[has_any] >= 1).all()


@settings(max_examples=40, deadline=None)
@given(mask_problem())
def test_same_seed_same_mask(p: dict) -> None:
    t_avail = None if p["avail"] is None else torch.from_numpy(p["avail"])
    v = torch.from_numpy(p["valid"])
    a = sample_mask(v, p["m"], p["rate"], gen(p["seed"]), t_avail)
    b = sample_mask(v, p["m"], p["rate"], gen(p["seed"]), t_avail)
    assert torch.equal(a, b)


def test_nominal_07_keeps_exactly_one() -> None:
    valid = torch.ones(4, 9, dtype=torch.bool)
    mask = sample_mask(valid, 3, 0.7, gen(1))
    assert (mask.sum(-1) == 1).all()
    assert achieved_rate(mask, valid) == pytest.approx(2 / 3)


def test_rate_zero_keeps_everything_and_one_drops_to_cap() -> None:
    valid = torch.tensor([[True, True, False]])
    assert sample_mask(valid, 3, 0.0, gen()).sum() == 6
    full = sample_mask(valid, 3, 1.0, gen())
    assert full[0, :2].sum(-1).tolist() == [1, 1] and not full[0, 2].any()


def test_missing_target_rounding() -> None:
    assert missing_target(10, 3, 0.1) == 3  # 0.1 · 30 = 3.0000000000000004 -> 3
    assert missing_target(5, 3, 0.1) == 2  # 1.5 rounds half up, not to even
    assert missing_target(5, 3, 0.7) == 10  # 10.5 -> capped at 5 · 2
    assert missing_target(7, 1, 0.9) == 0  # a single modality can never go missing


def test_cells_are_spread_uniformly() -> None:
    # Rate 1/3 with M = 3 and no availability limits: each modality goes missing 1/3 of the
    # time; over 3,000 cells a bias towards one modality would show.
    valid = torch.ones(1000, dtype=torch.bool)
    mask = sample_mask(valid, 3, 1 / 3, gen(7))
    per_modality = (~mask).float().mean(0)
    assert torch.allclose(per_modality, torch.full((3,), 1 / 3), atol=0.05)


def test_available_counts_toward_rate() -> None:
    # Audio absent everywhere: 1/3 of the cells are missing already, so rate 0.2 removes
    # nothing more and rate 0.5 removes 0.5·30 − 10 = 5 more cells.
    valid = torch.ones(10, dtype=torch.bool)
    avail = torch.ones(10, 3, dtype=torch.bool)
    avail[:, 1] = False
    low = sample_mask(valid, 3, 0.2, gen(), avail)
    assert torch.equal(low, avail)
    mid = sample_mask(valid, 3, 0.5, gen(), avail)
    assert int((~mid).sum()) == 15 and not mid[:, 1].any()


def test_utterance_without_any_modality_stays_empty() -> None:
    valid = torch.ones(3, dtype=torch.bool)
    avail = torch.tensor([[False, False], [True, True], [True, False]])
    mask = sample_mask(valid, 2, 0.0, gen(), avail)
    assert mask.tolist() == [[False, False], [True, True], [True, False]]


def test_sampler_errors() -> None:
    valid = torch.ones(4, dtype=torch.bool)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rate"):
            sample_mask(valid, 3, bad, gen())
    with pytest.raises(ValueError, match="shape"):
        sample_mask(valid, 3, 0.1, gen(), torch.ones(4, 2, dtype=torch.bool))


def test_achieved_rate() -> None:
    mask = np.array([[True, False, False], [True, True, True], [False, False, False]])
    valid = np.array([True, True, False])
    assert achieved_rate(mask, valid) == pytest.approx(2 / 6)
    assert achieved_rate(torch.from_numpy(mask), torch.from_numpy(valid)) == pytest.approx(2 / 6)
    assert achieved_rate(mask, np.zeros(3, dtype=bool)) == 0.0


def test_stable_seed() -> None:
    s = stable_seed("iemocap4", "test", 0.1, 0)
    assert 0 <= s < 2**63
    assert s == stable_seed("iemocap4", "test", 0.1, 0)
    assert s == stable_seed("iemocap4", "test", np.float64(0.1), np.int64(0))
    assert s != stable_seed("iemocap4", "test", 0.2, 0)
    assert s != stable_seed("iemocap6", "test", 0.1, 0)


def test_fixed_mask_reproducible_and_distinct() -> None:
    a = fixed_mask("cmumosi", "standard/test", 0.3, 0, 200, 3)
    assert a.shape == (200, 3) and a.dtype == bool
    assert np.array_equal(a, fixed_mask("cmumosi", "standard/test", 0.3, 0, 200, 3))
    assert np.array_equal(a, fixed_mask("cmumosi", "standard/test", 0.30000001, 0, 200, 3))  # round(rate, 4)
    assert achieved_rate(a, np.ones(200, dtype=bool)) == pytest.approx(0.3)
    for other in (
        fixed_mask("cmumosi", "standard/test", 0.4, 0, 200, 3),
        fixed_mask("cmumosi", "standard/valid", 0.3, 0, 200, 3),
        fixed_mask("cmumosi", "standard/test", 0.3, 1, 200, 3),
        fixed_mask("cmumosei", "standard/test", 0.3, 0, 200, 3),
    ):
        assert not np.array_equal(a, other)


def test_seed_and_fixed_mask_bit_for_bit_in_another_process() -> None:
    # hash() of a str changes per process; stable_seed and the masks it seeds must not.
    avail = np.ones((50, 3), dtype=bool)
    avail[::4, 2] = False
    here = fixed_mask("iemocap4", "loso-fold0/test", 0.5, 3, 50, 3, avail)
    code = (
        "import numpy as np; from iteacnet.masking import fixed_mask, stable_seed;"
        "a = np.ones((50, 3), dtype=bool); a[::4, 2] = False;"
        "m = fixed_mask('iemocap4', 'loso-fold0/test', 0.5, 3, 50, 3, a);"
        "print(stable_seed('cmumosi', 'standard/test', 0.3, 2));"
        "print(np.packbits(m).tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seed, bits = out.stdout.split()
    assert int(seed) == stable_seed("cmumosi", "standard/test", 0.3, 2)
    assert bits == np.packbits(here).tobytes().hex()
    assert not (here & ~avail).any()


def test_pattern_mask() -> None:
    valid = torch.tensor([[True, True, False]])
    m = pattern_mask("ta", MODS, valid)
    assert m.shape == (1, 3, 3)
    assert m[0, 0].tolist() == [True, True, False] and not m[0, 2].any()
    assert pattern_mask("v", MODS, torch.ones(2, dtype=torch.bool)).tolist() == [[False, False, True]] * 2
    assert pattern_mask("at", ("text", "audio"), torch.ones(1, dtype=torch.bool)).tolist() == [[True, True]]


@pytest.mark.parametrize("bad", ["", "x", "tt", "tz"])
def test_pattern_mask_bad_letters(bad: str) -> None:
    with pytest.raises(ValueError):
        pattern_mask(bad, MODS, torch.ones(2, dtype=torch.bool))


def test_pattern_for_absent_modality() -> None:
    with pytest.raises(ValueError, match="visual"):
        pattern_mask("tv", ("text", "audio"), torch.ones(2, dtype=torch.bool))


def test_patterns() -> None:
    assert len(PATTERNS) == 6 and len(set(PATTERNS)) == 6
    assert patterns_for(MODS) == PATTERNS
    assert patterns_for(("text", "audio")) == ("t", "a")
    assert patterns_for(("text",)) == ()


def test_save_load_masks(tmp_path) -> None:
    masks = {r: fixed_mask("synthetic", "standard/test", r, 0, 30, 3) for r in (0.0, 0.1, 0.7)}
    npz, js = save_masks(tmp_path / "masks" / "test-0", masks, {"corpus": "synthetic", "seed": 0})
    assert npz.name == "test-0.npz" and js.name == "test-0.json"
    loaded = load_masks(tmp_path / "masks" / "test-0.npz")
    assert loaded.rates == (0.0, 0.1, 0.7) and loaded.meta == {"corpus": "synthetic", "seed": 0}
    for r, m in masks.items():
        assert np.array_equal(loaded.masks[r], m)


def test_load_masks_detects_tampering(tmp_path) -> None:
    save_masks(tmp_path / "m", {0.1: np.ones((4, 3), dtype=bool)}, {})
    np.savez(tmp_path / "m.npz", mask0=np.zeros((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="checksum"):
        load_masks(tmp_path / "m")
