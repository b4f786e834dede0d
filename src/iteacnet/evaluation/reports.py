"""Results files, paper-style Markdown tables and plots, all built from long-format rows.

A row is one (run, rate or pattern) with its metrics; see `protocols.run_key`.
Aggregation: per seed, the mean over folds (IEMOCAP's 5 folds); then mean ± std over seeds.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iteacnet.errors import UserError
from iteacnet.metrics import format_mean_std

GROUP_KEYS = ("corpus", "method", "framework", "teacher", "student", "ecce", "protocol", "selection", "variant_label",
              "recipe", "regime")


def group_value(row: dict[str, Any], key: str) -> Any:
    """A row's value of a GROUP_KEYS column. `regime` is the UME training-rate regime (IME
    lines join one model per rate, so it is empty there); rows written before recipes and
    regimes existed read as "shared" and "U[0.0,0.7]"."""
    if key == "regime":
        if row.get("protocol") != "ume":
            return ""
        tr = row.get("train_rate", "")
        return "U[0.0,0.7]" if tr in ("U[0,0.7]", None) else tr
    if key == "recipe":
        return row.get("recipe", "shared")
    return row.get(key, "")


# ---------------------------------------------------------------------------- files
def write_rows(rows: Sequence[dict[str, Any]], folder: Path, stem: str = "results") -> tuple[Path, Path]:
    """Write rows as `<stem>.json` and `<stem>.csv` (union of columns, stable order)."""
    folder.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    jpath, cpath = folder / f"{stem}.json", folder / f"{stem}.csv"
    jpath.write_text(json.dumps(list(rows), indent=1, default=_json_default) + "\n")
    with cpath.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in cols})
    return jpath, cpath


def jsonl_records(text: str) -> Iterator[Any]:
    """The records of a JSONL text; a torn line (a kill mid-write) is skipped."""
    for line in text.splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows from a results JSON, a JSONL (the benchmark grid's), or a CSV; any of them gzipped."""
    if not path.is_file():
        raise UserError(f"no results file at {path}")
    suffix = Path(path.stem).suffix if path.suffix == ".gz" else path.suffix  # cells.jsonl.gz
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    if suffix == ".csv":
        return [{k: _parse(v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(text))]
    if suffix == ".jsonl":  # the grid's cells.jsonl holds {"cell", "rows": [...]}; torn lines skipped
        out: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for rec in jsonl_records(text):
            if isinstance(rec, dict) and "rows" in rec:
                if rec.get("cell") in seen:  # a cell recorded twice (two runs on one --out) counts once
                    continue
                seen.add(rec.get("cell"))
                out.extend(rec["rows"])
            else:
                out.append(rec)
        return out
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: not a results JSON ({e})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of rows")
    return data


def _parse(v: str) -> Any:
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o)}")


# ---------------------------------------------------------------------------- aggregation
def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def rate_of(row: dict[str, Any]) -> float | None:
    r = row.get("rate")
    if r is None or r == "" or _isnan(r):
        return None
    return round(float(r), 4)


def group_label(row: dict[str, Any]) -> str:
    """A method as the paper's tables name it."""
    if row.get("variant_label"):
        return str(row["variant_label"])
    if row.get("method") == "iteacnet":
        parts = [f"ITEACNet[{str(row.get('framework', '')).upper()}"]
        parts.append(f" {row.get('teacher', '')}")
        if row.get("student"):
            parts.append(f"/{row.get('student')}")
        ecce = row.get("ecce", "both")
        if ecce not in ("both", "", None):
            parts.append(f" ecce={ecce}")
        return "".join(parts) + "]"
    return str(row.get("method", "?")).upper()


def per_seed(rows: Iterable[dict[str, Any]], metric: str) -> dict[tuple, dict[float, list[float]]]:
    """{group: {rate: [value per seed (mean over folds)]}}."""
    acc: dict[tuple, dict[float, dict[Any, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        rate = rate_of(r)
        v = r.get(metric)
        if rate is None or v is None or v == "" or _isnan(v):
            continue
        g = tuple(group_value(r, k) for k in GROUP_KEYS)
        acc[g][rate][r.get("seed", 0)].append(float(v))
    return {g: {rate: [float(np.mean(fs)) for _, fs in sorted(seeds.items())] for rate, seeds in rates.items()}
            for g, rates in acc.items()}


def _mean_over_rates(cells: dict[float, list[float]], rates: Sequence[float]) -> list[float]:
    """Per seed, the mean over rates (seeds present at every rate only)."""
    n = min(len(cells[r]) for r in rates)
    return [float(np.mean([cells[r][i] for r in rates])) for i in range(n)]


def _line_label(g: tuple, show: Sequence[str]) -> str:
    row = dict(zip(GROUP_KEYS, g))
    extra = [f"{'train ' if k == 'regime' else 'recipe '}{row[k]}" for k in show if row[k] != ""]
    return group_label(row) + (f" [{', '.join(extra)}]" if extra else "")


def rate_table(rows: Sequence[dict[str, Any]], metric: str = "waf", digits: int = 2) -> str:
    """Markdown like the paper's Tables 2–4: one line per method, rates, Average, Decline,
    and the number of seeds behind each cell (a range when some rates have fewer)."""
    groups = per_seed(rows, metric)
    if not groups:
        return f"_no rows with {metric}_\n"
    rates = sorted({r for cells in groups.values() for r in cells})
    out = []
    for corpus in sorted({g[0] for g in groups}):
        for protocol in sorted({g[6] for g in groups if g[0] == corpus}):
            sel = {g: c for g, c in groups.items() if g[0] == corpus and g[6] == protocol}
            flagged = any(g[7] == "gcnet-compatible" for g in sel)
            title = f"**{corpus}**, {protocol.upper()}, {metric.upper()} (mean ± std over seeds)"
            if flagged:
                title += " — ⚠ gcnet-compatible: model selected on the test fold"
            out.append(title + "\n")
            head = ["Method"] + [f"{r:.1f}" for r in rates] + ["Average", "Decline", "Seeds"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            # Lines that share a label but differ in recipe or training regime say which.
            show = [k for k in ("recipe", "regime") if len({g[GROUP_KEYS.index(k)] for g in sel}) > 1]
            for g, cells in sorted(sel.items(), key=lambda kv: _line_label(kv[0], show)):
                label = _line_label(g, show)
                vals = [format_mean_std(cells[r], digits) if r in cells else "–" for r in rates]
                have = [r for r in rates if r in cells]
                avg = format_mean_std(_mean_over_rates(cells, have), digits) if have else "–"
                lo, hi = min(have), max(have)
                if lo != hi:
                    n = min(len(cells[lo]), len(cells[hi]))
                    dec = format_mean_std([cells[lo][i] - cells[hi][i] for i in range(n)], digits)
                else:
                    dec = "–"
                counts = sorted({len(cells[r]) for r in have})
                seeds = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
                out.append("| " + " | ".join([label, *vals, avg, dec, seeds]) + " |")
            out.append("")
    return "\n".join(out) + "\n"


def pattern_table(rows: Sequence[dict[str, Any]], metric: str = "waf", digits: int = 2) -> str:
    """Markdown of fixed-pattern scenarios (only text, text+audio, …), if any were scored."""
    acc: dict[tuple[str, str], dict[str, dict[Any, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        if r.get("pattern") and r.get(metric) not in (None, ""):
            acc[(r["corpus"], group_label(r))][r["pattern"]][r.get("seed", 0)].append(float(r[metric]))
    if not acc:
        return ""
    patterns = sorted({p for v in acc.values() for p in v}, key=lambda p: (len(p), p))
    out = ["| Corpus | Method | " + " | ".join(patterns) + " |", "|" + "---|" * (len(patterns) + 2)]
    for (corpus, label), cells in sorted(acc.items()):
        vals = [format_mean_std([float(np.mean(v)) for v in cells[p].values()], digits) if p in cells else "–" for p in patterns]
        out.append(f"| {corpus} | {label} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- plots
def plot_rates(rows: Sequence[dict[str, Any]], path: Path, metric: str = "waf") -> Path | None:
    """WAF against missing rate, one line per method (mean over seeds, band = ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = per_seed(rows, metric)
    if not groups:
        return None
    panels = sorted({(g[0], g[6]) for g in groups})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (corpus, protocol) in zip(axes[0], panels):
        for g, cells in sorted(groups.items()):
            if (g[0], g[6]) != (corpus, protocol):
                continue
            rates = sorted(cells)
            mu = np.array([np.mean(cells[r]) for r in rates])
            sd = np.array([np.std(cells[r], ddof=1) if len(cells[r]) > 1 else 0.0 for r in rates])
            (line,) = ax.plot(rates, mu, marker="o", ms=3, label=group_label(dict(zip(GROUP_KEYS, g))))
            ax.fill_between(rates, mu - sd, mu + sd, alpha=0.15, color=line.get_color())
        ax.set_title(f"{corpus} — {protocol.upper()}")
        ax.set_xlabel("missing rate")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_router(usage: dict[str, np.ndarray], mixer_names: Sequence[str], path: Path, title: str = "") -> Path | None:
    """Heatmap per modality: mean routing weight of each mixer (columns) in each layer (rows)."""
    if not usage:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mods = list(usage)
    fig, axes = plt.subplots(1, len(mods), figsize=(4.2 * len(mods), 0.6 * next(iter(usage.values())).shape[0] + 2.0), squeeze=False)
    for ax, m in zip(axes[0], mods):
        u = usage[m]
        im = ax.imshow(u, vmin=0.0, vmax=max(float(u.max()), 1e-6), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(mixer_names)), list(mixer_names), rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(u.shape[0]), [f"layer {i + 1}" for i in range(u.shape[0])])
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                ax.text(j, i, f"{u[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w" if u[i, j] < 0.6 * u.max() else "k")
        ax.set_title(f"router ({m})")
        fig.colorbar(im, ax=ax, fraction=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_report(rows: Sequence[dict[str, Any]], folder: Path, title: str = "Results") -> Path:
    """results.{json,csv}, report.md (tables) and waf_vs_rate.png in `folder`."""
    write_rows(rows, folder)
    parts = [f"# {title}\n"]
    if any(r.get("corpus") == "synthetic" for r in rows):
        parts.append("_Corpus `synthetic`: generated by iteacnet, not real data._\n")
    parts.append(rate_table(rows, "waf"))
    if any(r.get("mae") not in (None, "") for r in rows):
        parts.append(rate_table(rows, "mae", digits=3))
    pt = pattern_table(rows)
    if pt:
        parts.append("Fixed-pattern scenarios (WAF):\n\n" + pt)
    md = folder / "report.md"
    md.write_text("\n".join(parts))
    plot_rates(rows, folder / "waf_vs_rate.png")
    return md


# ---------------------------------------------------------------------------- the grid's tables
def ecce_table(rows: Sequence[dict[str, Any]], digits: int = 2) -> str:
    """Table 1 layout: Dataset | Local | Global | WAF (rate 0.0, mean ± std over seeds)."""
    groups = per_seed([r for r in rows if r.get("protocol") == "complete"], "waf")
    if not groups:
        return ""
    order = {"none": 0, "global": 1, "both": 2}
    out = ["| Dataset | Local | Global | Variant | WAF | Seeds |", "|---|---|---|---|---|---|"]
    for g, cells in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][5].split("/")[0], 9), kv[0][5])):
        kind, _, variant = g[5].partition("/")  # e.g. both/shared+drop0.5
        local = "✓" if kind == "both" else "✕"
        glob = "✓" if kind in ("both", "global") else "✕"
        vals = cells.get(0.0, [])
        shown = variant or ("dense" if kind == "both" else "")
        out.append(f"| {g[0]} | {local} | {glob} | {shown} | "
                   f"{format_mean_std(vals, digits)} | {len(vals)} |")
    return "\n".join(out) + "\n"


def grid_report(rows: Sequence[dict[str, Any]], folder: Path, title: str = "Benchmark") -> Path:
    """results.{csv,json}, report.md with the paper's Tables 1–4, and one plot per table."""
    from iteacnet.benchmark.variants import TABLE_TITLES, variants_for_table

    write_rows(rows, folder)
    parts = [f"# {title}\n"]
    if any(r.get("corpus") == "synthetic" for r in rows):
        parts.append("_Corpus `synthetic`: generated by iteacnet, not real data._\n")
    if any(r.get("selection") == "gcnet-compatible" for r in rows):
        parts.append("**⚠ Some rows use gcnet-compatible selection: the model was selected on the test fold.**\n")
    t1 = ecce_table(rows)
    if t1:
        parts.append(f"## {TABLE_TITLES[1]}\n\n{t1}")
    # Table 2 is IME in the paper (its ITS rows equal Table 3's ITEACNet rows); its UME
    # version is kept as an extra table ("2u").
    for table, protocol, key in ((2, "ime", 2), (2, "ume", "2u"), (3, "ime", 3), (4, "ume", 4)):
        names = set(variants_for_table(table))
        sel = [r for r in rows if r.get("variant") in names and r.get("protocol") == protocol]
        if not sel:
            continue
        parts.append(f"## {TABLE_TITLES[key]}\n\n" + rate_table(sel, "waf"))
        if any(r.get("mae") not in (None, "") for r in sel):
            parts.append(rate_table(sel, "mae", digits=3))
        plot_rates(sel, folder / f"table{key}_waf.png")
    md = folder / "report.md"
    md.write_text("\n".join(parts))
    return md


# ---------------------------------------------------------------------------- paired statistics
# Pairs are runs that share everything the comparison does not vary: corpus, protocol, split,
# fold, seed (so: identical fixed test masks) and the rate or pattern scored.
PAIR_KEYS = ("corpus", "protocol", "split", "fold", "seed", "rate", "pattern")


def parse_selector(text: str) -> dict[str, str]:
    """`key=value[,key=value]` (or a bare variant name) → the row fields it requires."""
    if "=" not in text:
        return {"variant": text}
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise ValueError(f"bad selector part {part!r}: expected key=value")
        out[k.strip()] = v.strip()
    return out


def _matches(row: dict[str, Any], sel: dict[str, str]) -> bool:
    return all(str(group_value(row, k) if k in GROUP_KEYS else row.get(k, "")) == v for k, v in sel.items())


def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def paired_difference(
    rows: Sequence[dict[str, Any]], a: dict[str, str], b: dict[str, str], metric: str = "waf",
    where: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Paired mean difference A − B with a 95% t-interval, per rate and for the mean over rates.

    The unit is one (fold, seed) run pair (one per seed on single-split corpora). Raises
    ValueError when a selector matches more than one row per pair (add a key to both)."""
    where = where or {}
    if not any(r.get(metric) not in (None, "") for r in rows):
        raise ValueError(f"no row has a {metric!r} column; columns here: {', '.join(sorted({k for r in rows for k in r}))}")
    keys = [k for k in PAIR_KEYS if k not in a and k not in b]

    def index(sel: dict[str, str]) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for r in rows:
            if not (_matches(r, sel) and _matches(r, where)) or r.get(metric) in (None, "") or _isnan(r.get(metric)):
                continue
            if rate_of(r) is None and not r.get("pattern"):
                continue
            k = tuple(str(r.get(c, "")) if c != "rate" else rate_of(r) for c in keys)
            if k in out:
                raise ValueError(f"selector {sel} matches more than one row for {dict(zip(keys, k))}; "
                                 "make both selectors more specific (e.g. add train_rate=... or recipe=...)")
            out[k] = float(r[metric])
        return out

    ia, ib = index(a), index(b)
    common = sorted(set(ia) & set(ib), key=str)
    if not common:
        raise ValueError(f"no pairs: nothing matches both {a} and {b} on {keys}")
    ri = keys.index("rate")
    by_rate: dict[Any, dict[tuple, float]] = defaultdict(dict)
    for k in common:
        unit = tuple(v for i, v in enumerate(k) if i != ri)
        by_rate[k[ri]][unit] = ia[k] - ib[k]

    def summary(d: Sequence[float]) -> dict[str, float]:
        n = len(d)
        mean = float(np.mean(d))
        if n < 2:
            return {"n": n, "mean": mean, "lo": float("nan"), "hi": float("nan")}
        half = t_quantile(n - 1) * float(np.std(d, ddof=1)) / math.sqrt(n)
        return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half}

    out: dict[str, Any] = {"keys": keys, "rates": {}}
    for rate, units in sorted(by_rate.items(), key=lambda kv: (kv[0] is None, kv[0] or 0.0)):
        out["rates"][rate] = summary(list(units.values()))
    rates = [r for r in by_rate if r is not None]
    if len(rates) > 1:
        shared = set.intersection(*(set(by_rate[r]) for r in rates))
        out["average"] = summary([float(np.mean([by_rate[r][u] for r in rates])) for u in sorted(shared, key=str)])
    return out


def paired_table(result: dict[str, Any], a: str, b: str, metric: str = "waf", digits: int = 2) -> str:
    """Markdown of `paired_difference`: one line per rate (and the average over rates)."""
    lines = [f"Paired difference {metric.upper()}: ({a}) − ({b}), mean and 95% t-interval over "
             f"run pairs matched on {', '.join(result['keys'])}\n",
             "| Rate | Mean diff | 95% CI | Pairs |", "|---|---|---|---|"]

    def fmt(s: dict[str, float]) -> str:
        ci = "–" if math.isnan(s["lo"]) else f"[{s['lo']:+.{digits}f}, {s['hi']:+.{digits}f}]"
        return f"{s['mean']:+.{digits}f} | {ci} | {s['n']}"

    for rate, s in result["rates"].items():
        lines.append(f"| {'–' if rate is None else f'{rate:.1f}'} | {fmt(s)} |")
    if "average" in result:
        lines.append(f"| Average | {fmt(result['average'])} |")
    return "\n".join(lines) + "\n"
