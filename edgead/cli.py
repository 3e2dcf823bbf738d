"""The ``edgead`` command. Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``main(args) -> int``; modules import their heavy dependencies (torch, onnxruntime, ...) inside ``main`` so that
``edgead --help`` stays fast and works on a runtime-only install."""

from __future__ import annotations

import argparse
import importlib
import sys

# (name, module, one-line help)
COMMANDS = [
    ("synth", "edgead.synth", "generate the synthetic benchmark (Real3D-AD layout)"),
    ("train", "edgead.train", "train a detector (template, dusnet, r3dad) on normal scans"),
    ("eval", "edgead.evaluate", "evaluate a detector on test categories (AUROC/AUPR, timing, plots)"),
    ("export", "edgead.export", "export a trained run to ONNX / TensorRT engines with a manifest"),
    ("bench", "edgead.bench", "benchmark an engine's per-stage latency against the PyTorch eager reference"),
    ("serve", "edgead.stream.service", "run the streaming detection service over ZeroMQ"),
    ("sensor", "edgead.stream.sensors", "publish sensor frames (realsense, replay) over ZeroMQ"),
    ("calibrate", "edgead.calibrate", "calibrate the scene (plane, ROI) or the decision threshold"),
    ("demo", "edgead.stream.demo", "replay synthetic parts through the service and print results live"),
    ("bridge", "edgead.bridge_cli", "bridge the service's results to OPC UA or MQTT for plant systems"),
]


def build_parser() -> argparse.ArgumentParser:
    from edgead import __version__

    parser = argparse.ArgumentParser(prog="edgead", description="Streaming 3D anomaly detection for factory lines: "
                                     "train, evaluate, export and serve detectors.")
    parser.add_argument("--version", action="version", version=f"edgead {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_main"):
        parser.print_help()
        return 0
    try:
        return int(args._main(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"edgead {args.command}: error: {exc}", file=sys.stderr)
        return 2
