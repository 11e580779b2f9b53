"""Re-runs results of the registry (`results/registry.json`, the source of RESULTS.md) and says which still hold.

    python -m scripts.reproduce --list                      # every row: id, recorded value, wall time
    python -m scripts.reproduce --rows='ppo/*,gcn/cora'     # these rows (shell-style patterns on the id)
    python -m scripts.reproduce --budget=30                 # the rows whose recorded wall times fit 30 minutes,
                                                            # cheapest first

Each row's command runs into a fresh workdir under `--outdir` (default `runs/reproduce-<time>`); its results.json value
(`<metric>_mean`, or `<metric>` for a whole-run figure) is compared with the recorded one within the row's tolerance
(`{"stds": k}`: k recorded stds; `{"stderrs": k}`: k standard errors of the recorded seeds; `{"abs": x}`; `{"exact":
true}`; several: the widest). Prints one line per row as it ends — reproduced, drifted (by how many recorded stds)
or failed — then a table, and writes `report.json` (with this machine's hardware: a row measured on a CPU and re-run
on a GPU is compared on its metric, not its time). Exit code 1 when any row drifted or failed, 2 for a bad flag.
"""

import datetime
import fnmatch
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

from absl import flags

from scripts import cli, results

_ROWS = flags.DEFINE_string(
    "rows",
    None,
    "Comma-separated shell-style patterns of the row ids to re-run (default: all). Row ids may hold commas "
    "themselves: `--rows='gin/mutag,kg_walker/umls,reward_shaping=complex'` is two rows.",
)
_BUDGET = flags.DEFINE_float("budget", None, "Minutes: re-run the rows whose recorded wall times fit, cheapest first.")
_LIST = flags.DEFINE_bool("list", False, "List the rows (after --rows/--budget) and exit.")
_OUT = flags.DEFINE_string("outdir", None, "Where the workdirs and report.json go (default runs/reproduce-<time>).")
_REGISTRY = flags.DEFINE_string("registry", results.REGISTRY, "The registry file.")
_RECORD = flags.DEFINE_bool(
    "record",
    False,
    "Write each re-run into its row's history (with the commit and hardware); a reproduced row whose "
    "commit was not recorded gets this one. Then `python -m scripts.results` regenerates RESULTS.md.",
)


def _matches_any(ids: list[str], pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(i, pattern) for i in ids)


def split_patterns(text: str, ids: list[str]) -> list[str]:
    """`--rows`'s comma-separated patterns, where a row id may hold commas itself: from each piece on, the longest
    run of comma-joined pieces that matches some row id is one pattern (a piece that matches nothing stays alone)."""
    pieces, patterns, i = text.split(","), [], 0
    while i < len(pieces):
        end = next((j for j in range(len(pieces), i, -1) if _matches_any(ids, ",".join(pieces[i:j]))), i + 1)
        patterns.append(",".join(pieces[i:end]))
        i = end
    return [p for p in patterns if p]


def select(rows: list[dict], patterns: list[str] | None, budget_minutes: float | None) -> list[dict]:
    """The rows matching any of `patterns` (all when None); with a budget, the cheapest first while they fit."""
    chosen = [r for r in rows if not patterns or any(fnmatch.fnmatchcase(r["id"], p) for p in patterns)]
    if budget_minutes is None:
        return chosen
    left, fitting = budget_minutes * 60, []
    for row in sorted(chosen, key=lambda r: r.get("wall_seconds") or math.inf):
        seconds = row.get("wall_seconds")
        if seconds is not None and seconds <= left:
            fitting.append(row)
            left -= seconds
    return fitting


def recorded_value(row: dict, results_json: dict) -> tuple[float | None, float | None]:
    """The row's figure from a run's results.json: (mean, std) — `<metric>_mean`/`_std`, else `<metric>`."""
    metric, scale = row["metric"], row.get("scale", 1)
    if f"{metric}_mean" in results_json:
        mean, std = results_json[f"{metric}_mean"], results_json.get(f"{metric}_std")
    else:
        mean, std = results_json.get(metric), None
    if mean is None:
        return None, None
    return mean * scale, (None if std is None else std * scale)


def allowed_difference(row: dict) -> float:
    """How far a re-run may land from the recorded mean and still reproduce it."""
    tolerance, std = row["tolerance"], row.get("std") or 0.0
    if tolerance.get("exact"):
        return 0.0
    widths = [tolerance.get("abs", 0.0), tolerance.get("stds", 0) * std]
    if "stderrs" in tolerance:
        widths.append(tolerance["stderrs"] * std / math.sqrt(max(1, row.get("seeds") or 1)))
    return max(widths)


def compare(row: dict, mean: float | None) -> tuple[str, str]:
    """(status, detail): "reproduced", "drifted" (by how much) or "failed" (no value)."""
    if mean is None:
        return "failed", f"results.json has no {row['metric']}"
    delta = mean - row["mean"]
    std = row.get("std") or 0.0
    in_stds = f" ({delta / std:+.1f} recorded stds)" if std else ""
    status = "reproduced" if abs(delta) <= allowed_difference(row) else "drifted"
    return status, f"{mean:.6g} vs recorded {row['mean']:.6g}: {delta:+.4g}{in_stds}"


def hardware() -> str:
    gpus = ""
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip().splitlines()
        gpus = f", {len(listing)} GPU ({listing[0].split('(')[0].strip()})" if listing else ""
    return f"{os.cpu_count()}-core {platform.machine()} CPU{gpus}"


def slug(row_id: str) -> str:
    """A row's workdir name: its id with `/` and `=` made safe."""
    return row_id.replace("/", "__").replace("=", "-")


def run_row(row: dict, workdir: str, log_path: str, rows: dict | None = None) -> dict:
    """Runs the row's command into `workdir` (its output in `log_path`) and compares its figure.

    A row whose figure starts from another row's run (`"needs": <row id>`, e.g. a transfer from a pretrained
    network) names that run's workdir `{needs}` in its command: the needed row runs first, beside `workdir`, unless
    it already ran there."""
    command = f"{row['command']} --workdir={workdir}"
    if row.get("needs"):
        needed = (rows or {}).get(row["needs"])
        if needed is None:
            return {
                "id": row["id"],
                "command": command,
                "wall_seconds": 0.0,
                "status": "failed",
                "detail": f"needs row {row['needs']}, which the registry does not have",
            }
        needed_dir = os.path.join(os.path.dirname(workdir), slug(needed["id"]))
        if not os.path.exists(os.path.join(needed_dir, "results.json")):
            first = run_row(
                needed, needed_dir, os.path.join(os.path.dirname(log_path), f"{slug(needed['id'])}.log"), rows
            )
            if first["status"] == "failed":
                return first | {"id": row["id"], "detail": f"its needed row {needed['id']} failed: {first['detail']}"}
        command = command.replace("{needs}", needed_dir)
    args = shlex.split(command)
    if args[0] == "python":  # the interpreter running this, with the project installed
        args[0] = sys.executable
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(args, cwd=results.ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    out = {"id": row["id"], "command": command, "wall_seconds": seconds, "exit_code": proc.returncode, "log": log_path}
    path = os.path.join(workdir, "results.json")
    if proc.returncode != 0 or not os.path.exists(path):
        return out | {"status": "failed", "detail": f"exit {proc.returncode}; see {log_path}"}
    with open(path) as f:
        mean, std = recorded_value(row, json.load(f))
    status, detail = compare(row, mean)
    return out | {"status": status, "detail": detail, "mean": mean, "std": std}


def reproduce(argv: list[str]) -> None:
    from lepton_jax.errors import UserError

    cli.parse_flags(argv)
    if not os.path.isfile(_REGISTRY.value):
        raise UserError(f"--registry={_REGISTRY.value}: no such file")
    registry = results.load(_REGISTRY.value)
    patterns = None
    if _ROWS.value is not None:
        ids = [r["id"] for r in registry["rows"]]
        patterns = split_patterns(_ROWS.value, ids)
        unmatched = [p for p in patterns if not _matches_any(ids, p)]
        if unmatched:
            raise UserError(f"--rows: no row id matches {', '.join(map(repr, unmatched))}; see --list")
    rows = select(registry["rows"], patterns, _BUDGET.value)
    if not rows:
        raise UserError("no row of the registry matches --rows / fits --budget; see --list")
    if _LIST.value:
        for row in rows:
            print(f"{row['id']:60s} {results.measured(row).replace('**', ''):30s} {results.wall(row)}")
        return
    by_id = {r["id"]: r for r in registry["rows"]}
    rows = [r for r in rows if r["mean"] is not None]
    out = _OUT.value or os.path.join("runs", f"reproduce-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    total = sum(r.get("wall_seconds") or 0 for r in rows)
    done_recorded, started, report = 0.0, time.perf_counter(), []
    for i, row in enumerate(rows):
        eta = ""
        if done_recorded:
            rate = (time.perf_counter() - started) / done_recorded  # this machine's time per recorded second
            eta = f", ETA {(total - done_recorded) * rate / 60:.1f} min"
        print(f"[{i + 1}/{len(rows)}] {row['id']} (recorded {results.wall(row)}{eta}) ...", flush=True)
        name = slug(row["id"])
        entry = run_row(row, os.path.join(out, name), os.path.join(out, f"{name}.log"), by_id)
        report.append(entry)
        done_recorded += row.get("wall_seconds") or 0
        print(f"    {entry['status']}: {entry['detail']} ({entry['wall_seconds']:.0f} s)", flush=True)
    print("\n| row | status | detail |\n|---|---|---|")
    for entry in report:
        print(f"| {entry['id']} | {entry['status']} | {entry['detail']} |")
    summary = {"hardware": hardware(), "rows": report}
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"report: {os.path.join(out, 'report.json')}")
    if _RECORD.value:
        record(_REGISTRY.value, registry, report, summary["hardware"])
    bad = [e["id"] for e in report if e["status"] != "reproduced"]
    if bad:
        raise Drift(f"{len(bad)} of {len(report)} rows did not reproduce: {', '.join(bad)}")


def commit() -> str:
    """The checkout's short commit, `+dirty` when it has uncommitted changes to tracked files."""
    from lepton_jax.run import code_commit

    return code_commit() or "unknown"


def record(path: str, registry: dict, report: list[dict], machine: str) -> None:
    """Adds each re-run to its row's `history`; a reproduced row with no commit gets this one."""
    here = commit()
    rows = {row["id"]: row for row in registry["rows"]}
    for entry in report:
        row = rows[entry["id"]]
        row.setdefault("history", []).append(
            {
                "mean": entry.get("mean"),
                "std": entry.get("std"),
                "commit": here,
                "hardware": machine,
                "wall_seconds": round(entry["wall_seconds"], 1),
                "note": f"re-run by scripts.reproduce: {entry['status']}",
            }
        )
        if entry["status"] == "reproduced" and not row.get("commit"):
            row["commit"] = here
    with open(path + ".tmp", "w") as f:
        json.dump(registry, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"recorded in {path}; run python -m scripts.results to regenerate RESULTS.md")


class Drift(Exception):
    """Some rows drifted or failed (exit 1)."""


def main(argv: list[str]) -> int:
    try:
        return cli.run(reproduce, argv)
    except Drift as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
