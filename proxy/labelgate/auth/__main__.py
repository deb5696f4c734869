"""``python -m labelgate.auth generate-dev-keys DIR [--force]``: create the INSECURE quickstart key pair.

``python -m labelgate.auth generate-assertion-key FILE``: a P-256 key for
``upstream.subject_assertion.key_file`` (kept if FILE exists)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from labelgate.auth.assertion import write_key_file
from labelgate.auth.devkeys import generate
from labelgate.errors import LabelgateError


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labelgate.auth")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate-dev-keys", help="write a new INSECURE dev key pair and its JWKS")
    make.add_argument("directory", type=Path)
    make.add_argument("--force", action="store_true", help="replace an existing pair")
    assertion = commands.add_parser("generate-assertion-key", help="write a subject assertion signing key")
    assertion.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "generate-assertion-key":
        print(write_key_file(args.file))
        return
    try:
        paths = generate(args.directory, force=args.force)
    except LabelgateError as error:
        print(f"error: {error.message} ({error.reason})", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
