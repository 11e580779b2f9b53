"""The results registry (`results/registry.json`) and RESULTS.md, which is generated from it.

    python -m scripts.results            # writes RESULTS.md from results/template.md and the registry
    python -m scripts.results --check    # exit 1 if RESULTS.md is not what the registry and template give

Each row of the registry is one result: the command that produced it, the results.json key it reads
(`metric`: `<metric>_mean` / `<metric>_std`, or the key itself for a whole-run figure), the measured mean ± std over
`seeds`, the target and the paper or peer reference, the hardware, the wall time, the commit it ran at and the
tolerance within which a re-run counts as reproducing it (`scripts.reproduce`). RESULTS.md's hand-written prose is
`results/template.md`; a line `<!-- table: ID -->` there stands for the registry's table ID, rendered from its rows.

A row (keys):
  id, table, label, command, metric, mean, std (null: a single run), seeds, target, reference, hardware,
  wall_seconds, wall_note, commit (null: not recorded), tolerance ({"stds": k} | {"abs": x} | {"exact": true}),
  extra ({column: text} for a table's own columns), history (earlier measurements: {mean, std, commit, note});
  for display: decimals (of mean and std), bold (default true), measured_note (text after the number).
A table: id, columns ([header, field]: a row key, `measured` = mean ± std, `wall` = time and note, or
  `extra:<column>`).
"""

import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTRY = os.path.join(ROOT, "results", "registry.json")
TEMPLATE = os.path.join(ROOT, "results", "template.md")
RESULTS_MD = os.path.join(ROOT, "RESULTS.md")
MARKER = "<!-- table: "


def load(path: str = REGISTRY) -> dict:
    """The registry: `{"tables": [...], "rows": [...]}`."""
    with open(path) as f:
        return json.load(f)


def _digits(value: float, std: float | None) -> int:
    """Decimals that show `value` as the registry holds it (at most 4), so that nothing is rounded up or away."""
    for decimals in range(5):
        if all(x is None or round(x, decimals) == x for x in (value, std)):
            return decimals
    return 4


def measured(row: dict) -> str:
    """`**mean ± std**` as recorded (a minus sign for negatives), or the mean alone for a single run."""
    mean, std = row["mean"], row.get("std")
    if mean is None:
        return "not run" + _joined(row.get("measured_note"))
    decimals = row.get("decimals", _digits(mean, std))
    text = f"{mean:,.{decimals}f}".replace("-", "−")
    if std is not None:
        text += f" ± {std:,.{decimals}f}"
    text = f"**{text}**" if row.get("bold", True) else text
    return text + _joined(row.get("measured_note"))


def _joined(note: str | None) -> str:
    """A note after a figure: a space before it, none where the note begins with its own punctuation."""
    return "" if not note else note if note[0] in ",;:" else f" {note}"


def wall(row: dict) -> str:
    seconds = row.get("wall_seconds")
    if seconds is None:
        return row.get("wall_note") or "–"
    return f"{seconds:g} s" + _joined(row.get("wall_note"))


def cell(row: dict, field: str) -> str:
    if field == "measured":
        return measured(row)
    if field == "wall":
        return wall(row)
    if field == "command":
        return f"`{row['command']}`"
    if field == "commit":
        return row.get("commit") or "–"
    if field.startswith("extra:"):
        return str(row.get("extra", {}).get(field[len("extra:") :], ""))
    value = row.get(field)
    return "" if value is None else str(value)


def render_table(table: dict, rows: list[dict]) -> str:
    """The table's columns, then the commit each row was measured (or last reproduced) at: "–" when not recorded."""
    columns = [*table["columns"], ["commit", "commit"]]
    headers = [header for header, _ in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [cell(row, field) for _, field in columns]
        lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return "\n".join(lines)


def render(registry: dict, template: str) -> str:
    """RESULTS.md: the template with each `<!-- table: ID -->` line replaced by that table."""
    tables = {t["id"]: t for t in registry["tables"]}
    out = []
    lines = template.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(MARKER) and i + 1 < len(lines) and lines[i + 1].startswith("|"):
            # A hand-written copy under the marker would stand beside the generated table and drift from it.
            raise ValueError(f"template line {i + 2}: a table row right under '{line}' (the registry renders it)")
        if line.startswith(MARKER):
            table_id = line[len(MARKER) :].removesuffix("-->").strip()
            if table_id not in tables:
                raise ValueError(f"template names table '{table_id}', which the registry does not have")
            rows = [r for r in registry["rows"] if r["table"] == table_id]
            out.append(render_table(tables[table_id], rows))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def problems(registry: dict) -> list[str]:
    """What is wrong with the registry itself: duplicate ids, rows of no table, missing keys."""
    found, seen = [], set()
    tables = {t["id"] for t in registry["tables"]}
    for row in registry["rows"]:
        for key in ("id", "table", "label", "command", "metric", "mean", "seeds", "tolerance"):
            if key not in row:
                found.append(f"row {row.get('id', '?')}: no '{key}'")
        if row.get("id") in seen:
            found.append(f"row {row['id']}: duplicate id")
        seen.add(row.get("id"))
        if row.get("table") not in tables:
            found.append(f"row {row.get('id')}: table '{row.get('table')}' is not in the registry")
        if isinstance(row.get("mean"), float) and not math.isfinite(row["mean"]):
            found.append(f"row {row['id']}: mean is not finite")
    return found


def main(argv: list[str]) -> int:
    registry = load()
    with open(TEMPLATE) as f:
        text = render(registry, f.read())
    if "--check" in argv:
        with open(RESULTS_MD) as f:
            same = f.read() == text
        print("RESULTS.md matches the registry" if same else "RESULTS.md differs: run python -m scripts.results")
        return 0 if same and not problems(registry) else 1
    with open(RESULTS_MD, "w") as f:
        f.write(text)
    print(f"wrote {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
