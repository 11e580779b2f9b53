"""The launchers' one error path, and the `--config` flag of `scripts.train`.

Every launcher (`scripts.train`, `scripts.evaluate`) runs its work through `run(work, argv)`, which turns what a user
can fix into one line and an exit code, and leaves a genuine bug its traceback:

    exit 0    done (or already complete)
    exit 2    a user mistake: a bad flag, config key or value, a missing or corrupt file, ... (`error: ...`)
    exit 1    training diverged (a non-finite loss; `error: ...` naming the update or epoch)
    exit 130  interrupted by Ctrl-C, 143 by SIGTERM (one line saying what was saved)

`--config=FILE[:ARG]` and its overrides `--config.KEY=VALUE` are read here rather than by absl, so that every mistake
in them (a missing file, a syntax error, a misspelled key, a value of the wrong type) is one line whatever the
config, the default one included. A value is read as the type the key holds: `True/False`, an integer (`1e6` is
allowed when whole), a number, a string, or a tuple (`"(64, 64)"`, `"64,64"`, `"64"`).
"""

import ast
import difflib
import importlib.util
import os
import signal
import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags

from lepton_jax.errors import UserError

# Both launchers' run directory (one definition, so that both can be imported into one process).
WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "The run's directory: scripts.train writes it (default runs/<trainer>-<env>-<config hash>), "
    "scripts.evaluate reads it.",
)


def run(work: Callable[[list[str]], None], argv: list[str]) -> int:
    """Runs `work(argv)` and returns the launcher's exit code, printing one line for what a user can fix."""
    from lepton_jax.interrupt import Interrupted, StopAtOnce
    from lepton_jax.metrics import TrainingDiverged

    # Outside a run's scaffold (which says what it saved), a signal stops at once with this line.
    outside = "interrupted outside training (while starting, or after the run's files were written); nothing to save"
    try:
        with StopAtOnce(lambda: outside):
            work(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    except Interrupted as error:
        print(str(error), file=sys.stderr, flush=True)
        return 128 + error.signum
    except KeyboardInterrupt:
        print(f"{outside} (Ctrl-C)", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT
    return 0


def parse_flags(argv: list[str]) -> None:
    """absl's parsing of `argv` (program name first), a bad flag or value raised as a one-line `UserError`.

    Flags not in `argv` get their defaults (parsing twice in one process starts afresh each time).
    """
    app.define_help_flags()  # --help, --helpfull (print the usage and exit)
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(argv)
    except flags.Error as error:
        raise UserError(f"{error}; see --help") from None


def split_config_args(argv: list[str]) -> tuple[str | None, list[tuple[str, str]], list[str]]:
    """`argv` -> (the `--config=` value or None, the `--config.KEY=VALUE` overrides in order, the other args)."""
    value, overrides, rest = None, [], []
    for arg in argv:
        if arg.startswith("--config="):
            value = arg[len("--config=") :]
        elif arg.startswith("--config."):
            name, sep, text = arg[len("--config.") :].partition("=")
            if not sep:
                raise UserError(f"{arg}: give a value, --config.{name}=VALUE")
            overrides.append((name, text))
        elif arg == "--config":
            raise UserError("--config: give a file, --config=FILE[:ARG]")
        else:
            rest.append(arg)
    return value, overrides, rest


def load_config(value: str) -> ml_collections.ConfigDict:
    """The config of `--config=FILE[:ARG]`: `get_config(ARG)` (or `get_config()`) of the Python file FILE."""
    path, sep, arg = value.partition(":")
    where = f"--config={value}"
    if not os.path.exists(path):
        raise UserError(f"{where}: no such file {path}")
    if not os.path.isfile(path):
        raise UserError(f"{where}: {path} is not a file (give a config .py file)")
    try:
        spec = importlib.util.spec_from_file_location(f"lepton_config_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any failure to load the user's file is theirs to fix
        raise UserError(f"{where}: {path} cannot be loaded: {_one_line(error)}") from None
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"{where}: {path} defines no get_config(arg) function")
    try:
        config = module.get_config(arg) if sep else module.get_config()
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    except Exception as error:  # noqa: BLE001
        call = f"get_config({arg!r})" if sep else "get_config()"
        raise UserError(f"{where}: {call} raised {_one_line(error)}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{where}: get_config returned {type(config).__name__}, not an ml_collections.ConfigDict")
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[tuple[str, str]]) -> None:
    """Sets each `--config.KEY=VALUE` on `config` (in place), read as the type the key holds."""
    for name, text in overrides:
        node, path = config, []
        parts = name.split(".")
        for part in parts:
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(["config", *path])
                if not isinstance(node, ml_collections.ConfigDict):
                    raise UserError(f"--config.{name}: {where} is a value, not a group of keys")
                close = difflib.get_close_matches(part, list(node.keys()), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise UserError(
                    f"--config.{name}: {where} has no key '{part}'; {hint}its keys: {', '.join(sorted(node.keys()))}"
                )
            if part != parts[-1]:
                node, path = node[part], [*path, part]
        leaf = parts[-1]
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise UserError(
                f"--config.{name}: config.{name} is a group; set one of its keys, --config.{name}.KEY=VALUE"
            )
        value = _parse_value(name, text, node.get_type(leaf))
        try:
            node[leaf] = value
        except (TypeError, ValueError) as error:
            raise UserError(f"--config.{name}={text}: {_one_line(error)}") from None


def _parse_value(name: str, text: str, kind: type):
    bad = f"--config.{name}={text}: not "
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise UserError(bad + "True or False")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and number.is_integer() and abs(number) < 2**63:
            return int(number)
        raise UserError(bad + "an integer")
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(bad + "a number") from None
    if kind in (tuple, list):
        try:
            value = ast.literal_eval(text.strip() or "()")
        except (ValueError, SyntaxError):
            raise UserError(bad + 'a tuple, e.g. "(64, 64)" or 64,64') from None
        value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        return value if kind is tuple else list(value)
    return text


def _one_line(error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_workdir(workdir: str) -> None:
    """Makes sure `workdir` can hold a run: creates it, and writes (then removes) a probe file in it."""
    where = f"--workdir={workdir}"
    if workdir.strip() == "":
        raise UserError("--workdir is empty; give a directory")
    for part in os.path.abspath(workdir).split(os.sep):
        if len(part.encode()) > 255:
            raise UserError(f"{where}: the name '{part[:40]}...' is longer than 255 bytes")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"{where} is a file, not a directory; give a directory")
    probe = os.path.join(workdir, f".write-probe-{os.getpid()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise UserError(f"{where} cannot be written: {error.strerror or error}") from None
