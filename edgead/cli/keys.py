"""``edgead keys NAME... [--dir keys]``: CURVE key pairs for ``serve --curve-secret``, sensors and clients
(``docs/protocol.md``, Security). Secret files are readable by their owner only."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgead.stream.security import create_keys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", help="one key pair per name, e.g. server sensor plc")
    p.add_argument("--dir", type=Path, default=Path("keys"), help="folder for the key files (created; default keys/)")


def main(args: argparse.Namespace) -> int:
    for public, secret in create_keys(args.dir, args.names):
        print(f"wrote {public} (public) and {secret} (secret, mode 600)")
    return 0
