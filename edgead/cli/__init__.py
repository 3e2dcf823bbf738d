"""The ``edgead`` command: the only place with argparse. One module per command (``edgead.cli.<command>``), each
with ``add_arguments(parser)`` and ``main(args) -> int``.

Only the module of the command being run is imported (the one dynamic import in edgead), so ``edgead serve`` never
imports torch and ``edgead --help`` works on a runtime-only install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edgead import __version__

COMMANDS = {
    "synth": "generate the synthetic benchmark (Real3D-AD layout)",
    "train": "train a detector (template, dusnet, r3dad) on normal scans",
    "pretrain": "pre-train DUS-Net's networks on a folder of shapes (meshes or point clouds)",
    "eval": "evaluate a detector on test categories (AUROC/AUPR, timing, plots)",
    "export": "export a trained run to ONNX / TensorRT engines with a manifest",
    "bench": "benchmark a detector's per-stage latency against a plain k-d tree pass and PyTorch eager",
    "serve": "run the streaming detection service over ZeroMQ",
    "sensor": "publish sensor frames (realsense, replay) over ZeroMQ",
    "calibrate": "calibrate the scene (plane, ROI) or the decision threshold",
    "predict": "score scans (files or folders): results.csv, results.jsonl and heat-map images",
    "keys": "create CURVE key pairs for serve, sensors and clients",
    "bridge": "pass results and status on to plant systems: OPC UA server or MQTT broker",
    "demo": "replay synthetic parts through the service and print results live",
}
EXTRAS = {"torch": "train", "onnx": "train", "onnxscript": "train", "onnxruntime": "cpu", "pyrealsense2": "realsense",
          "matplotlib": "plot", "asyncua": "plant", "paho": "plant", "prometheus_client": "plant"}


def add_verbosity(parser: argparse.ArgumentParser, default=argparse.SUPPRESS) -> None:
    """``-v``/``-q`` on ``parser`` and, recursively, on its sub-commands (``edgead sensor replay -v`` works as
    ``edgead -v sensor replay``). Below the top level the options default to SUPPRESS, so that a sub-command does not
    reset what an outer level set."""
    parser.add_argument("-v", "--verbose", action="count", default=0 if default is None else default,
                        help="more output: -v logs each step (serve: each result), -vv debug")
    parser.add_argument("-q", "--quiet", action="store_true", default=False if default is None else default,
                        help="no progress bars, no warnings: errors and results only")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                add_verbosity(sub)


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of ``command`` only (the others are listed, not imported)."""
    parser = argparse.ArgumentParser(prog="edgead", description="Streaming 3D anomaly detection for factory lines: "
                                     "train, evaluate, export and serve detectors.")
    parser.add_argument("--version", action="version", version=f"edgead {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"edgead.cli.{name}")
            module.add_arguments(p)
            p.set_defaults(_main=module.main)
    add_verbosity(parser, default=None)
    return parser


class _Formatter(logging.Formatter):
    """``edgead train: warning: ...`` for people; with ``-v`` the time and the logger's name come first."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        return super().format(record)


def configure_logging(command: str, verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    fmt = "%(asctime)s %(name)s %(levelname)s: %(message)s" if verbose else f"edgead {command}: %(levelname)s: " \
        "%(message)s"
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        return _run(argv, command)
    except KeyboardInterrupt:  # also while a command's modules (torch) are still being imported
        print(f"edgead {command}: interrupted", file=sys.stderr)
        return 130


def _run(argv: list[str], command: str | None) -> int:
    try:
        parser = build_parser(command if command in COMMANDS else None)
    except ImportError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        hint = f"; install it with: pip install 'edgead[{extra}]'" if extra else ""
        print(f"edgead {command}: needs {exc.name}{hint}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not hasattr(args, "_main"):
        parser.print_help()
        return 0
    configure_logging(args.command, args.verbose, args.quiet)
    try:
        return int(args._main(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"edgead {args.command}: error: {exc}", file=sys.stderr)
        return 2
