"""What every stage's entry point shares: the argument parser, `-S` overrides, logging and the one-line
error."""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from pipeline.core.params import (
    SECTIONS,
    ParamError,
    PipelineError,
    read_file,
    read_params,
    shown,
    unknown_name,
)

log = logging.getLogger("pipeline")


def command_name(module: str) -> str:
    """How the user started `module`, for its usage line: the console command they typed
    (pyproject's [project.scripts]) when it runs this module, else `python -m module`."""
    typed = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if any(entry.module == module for entry in entry_points(group="console_scripts", name=typed)):
        return typed
    return f"python -m {module}"


class _ValueLoader(yaml.SafeLoader):
    """YAML as `dvc exp run -S` reads a value: 1e-4 is a number (YAML 1.2), not the string PyYAML's
    YAML 1.1 makes of it."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def param_override(text: str) -> tuple[str, Any]:
    """An argparse type: `section.param=value`, the value read as YAML. A malformed one is a usage
    error (exit 2)."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{shown(text)}: expected SECTION.PARAM=VALUE, "
                                         "as in train.epochs=5")
    try:
        return key.strip(), yaml.load(value, Loader=_ValueLoader)  # a SafeLoader
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int beyond Python's digit limit
        raise argparse.ArgumentTypeError(f"{shown(text)}: the value is not valid YAML "
                                         f"({exc.__class__.__name__})") from None


def _check_key(key: str, value: Any) -> list[str]:
    """The override's path, section first, once its section and param are known ones."""
    section, *path = key.split(".")
    if not path:
        owners = [name for name, cls in SECTIONS.items() if key in {f.name for f in fields(cls)}]
        if owners:
            raise ParamError(f"{shown(key)}: name its section too, as in "
                             + " or ".join(f"{owner}.{key}={shown(value)}" for owner in owners))
        raise unknown_name(key, "section", SECTIONS)
    if section not in SECTIONS:
        raise unknown_name(section, "section", SECTIONS)
    known = [f.name for f in fields(SECTIONS[section])]
    if path[0] not in known:
        raise unknown_name(f"{section}.{path[0]}", "param", known)
    return [section, *path]


def apply_override(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` (dotted, as `dvc exp run -S` names it) in the params file's contents `raw`; a
    section or mapping the file leaves out is added."""
    *parents, last = _check_key(key, value)
    node = raw
    for depth, name in enumerate(parents, 1):
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            where = ".".join(parents[:depth])
            raise ParamError(f"{shown(key)}: {where} is {shown(child)}, not a mapping of params")
        node = child
    node[last] = value


class StageParser(argparse.ArgumentParser):
    """A stage's parser: `--params FILE` and any number of `-S section.param=value`."""

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        if parsed.overrides:
            parsed.params = overridden_params(parsed, Path(parsed.params), parsed.overrides)
        return parsed, rest


def overridden_params(owner: object, path: Path, overrides: Sequence[tuple[str, Any]]) -> str:
    """The params file with `overrides` applied, as a private copy for every reader of --params
    (the stage, the scorecard, the report) to see the same values; removed once `owner` (the
    parsed arguments) is gone. The params file itself is never written."""
    raw = read_file(path)
    for key, value in overrides:
        apply_override(raw, key, value)
    folder = Path(tempfile.mkdtemp(prefix="params-with-overrides-"))
    weakref.finalize(owner, shutil.rmtree, folder, ignore_errors=True)
    copy = folder / path.name
    copy.write_text(yaml.safe_dump(raw, sort_keys=False))
    read_params(copy)  # the whole file checked now, before the stage starts
    return str(copy)


def stage_parser(description: str, module: str) -> argparse.ArgumentParser:
    """The parser of the stage `module` (its usage line names the command as it was run)."""
    parser = StageParser(prog=command_name(module), description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[],
                        type=param_override, metavar="SECTION.PARAM=VALUE",
                        help="override a param of the params file for this run, as `dvc exp run -S` "
                             "does (the value is YAML; repeatable; the file is not changed)")
    return parser


class AboveTheBars(logging.StreamHandler):
    """Logs through tqdm.write, which lifts the live progress bars, prints the line and draws them
    again below it: a plain write would land in the middle of a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a stage; a PipelineError becomes one line on stderr and exit status 2. Every stage's
    logging is set up here, on stderr above its progress bars."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", handlers=[AboveTheBars(sys.stderr)])
    try:
        main(argv)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; outputs written so far are kept, rerun to continue",
              file=sys.stderr)
        sys.exit(130)
