"""Metrics as a person reads them: the headline numbers, then one row per class, in percent (as the papers
report them). What ``maskformer eval`` and ``eval-files`` print unless asked for JSON."""

from __future__ import annotations

# Per-class mappings (class name -> value) and the column each becomes.
_COLUMNS = {"IoU": "IoU", "ACC": "Acc", "PQ_per_class": "PQ", "AP_per_class": "AP"}
_GROUPS = ("All", "Things", "Stuff")  # panopticapi's summary rows


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def metrics_report(metrics: dict) -> str:
    """``metrics`` of :func:`maskformer.training.evaluate.evaluate` or of the file scorers (see
    :mod:`maskformer.evaluation.files`) as a text table."""
    lines = []
    scalars = [(k, v) for k, v in metrics.items() if isinstance(v, float)]
    if scalars:
        lines.append("  ".join(f"{k} {_percent(v)}" for k, v in scalars) + "  (%)")
    groups = [g for g in _GROUPS if isinstance(metrics.get(g), dict)]
    if groups:
        lines.append(f"{'':<8}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'classes':>9}")
        for g in groups:
            row = metrics[g]
            lines.append(f"{g:<8}{_percent(row['pq']):>7}{_percent(row['sq']):>7}{_percent(row['rq']):>7}{row['n']:>9}")
    columns = {title: metrics[key] for key, title in _COLUMNS.items() if isinstance(metrics.get(key), dict)}
    nested = metrics.get("per_class")
    if isinstance(nested, dict):  # panoptic files: {name: {pq, sq, rq}}
        for part in ("pq", "sq", "rq"):
            columns[part.upper()] = {name: values[part] for name, values in nested.items()}
    if columns:
        names = list(dict.fromkeys(name for column in columns.values() for name in column))
        width = max(len("class"), *(len(str(n)) for n in names))
        lines.append("")
        lines.append(f"{'class':<{width}}" + "".join(f"{title:>8}" for title in columns))
        for name in names:
            lines.append(f"{name!s:<{width}}" + "".join(f"{_percent(c.get(name)):>8}" for c in columns.values()))
    return "\n".join(lines)
