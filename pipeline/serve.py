"""Play with a trained generator in the browser: tags, temperature and seed, a grid per change.

python -m pipeline.serve [--generator models/best.pt] [--port 8000] [--host 127.0.0.1]

(installed, the same command is `anime-face-serve`.)

One local process draws every grid on the CPU, from the same seeded noise and grid as
pipeline.generate; the page and the /faces.png endpoint are described in docs/serve.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.core.cli import command_name, run_stage
from pipeline.models.networks import load_generator
from pipeline.serving.faces import FaceServer
from pipeline.serving.server import make_server, serve


def port_number(text: str) -> int:
    """An argparse type: a port outside 0-65535 is a usage error (exit 2), before the model loads."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {text}")
    return port


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=command_name("pipeline.serve"),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, default=Path("models/best.pt"),
                        help="generator file written by the train stage (default: %(default)s)")
    parser.add_argument("--port", type=port_number, default=8000,
                        help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; the page has no login, so keep it local. Requests "
                             "must name this address (or localhost, on the loopback) as their Host "
                             "(default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    generator, payload = load_generator(args.generator, torch.device("cpu"))
    serve(make_server(FaceServer(generator, payload, args.generator), args.host, args.port))


def command() -> None:
    """The console command (pyproject's [project.scripts]), as `python -m` runs it."""
    run_stage(main)


if __name__ == "__main__":
    command()
