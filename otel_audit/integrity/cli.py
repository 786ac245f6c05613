"""``otel-audit keys generate`` and ``otel-audit verify-proof``: no Elasticsearch needed.

``keys generate --out DIR`` writes a signing key pair and prints its key id.
``verify-proof FILE --public-key KEY`` checks an offline inclusion proof bundle; KEY is
a public key PEM file or a directory of them (old keys verify old checkpoints). Exit
status 0 means the event is proven; 1 means it is not (reasons printed); 2 means the
command could not run (unreadable file, bad key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from otel_audit.exits import Exit
from otel_audit.integrity.bundle import (
    BundleVerification,
    Reason,
    ReasonCode,
    load_bundle_json,
    verify_bundle,
)
from otel_audit.integrity.errors import IntegrityError
from otel_audit.integrity.keys import Keyring, generate_private_key, write_key_pair

__all__ = ["register"]


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _error(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        _print_json({"ok": False, "error": message})
    else:
        sys.stderr.write(f"otel-audit: error: {message}\n")
    return Exit.USAGE


def _keys_generate(args: argparse.Namespace) -> int:
    try:
        files = write_key_pair(generate_private_key(), args.out, force=args.force)
    except FileExistsError as exc:
        return _error(args, f"{exc} (use --force to replace it)")
    except OSError as exc:
        return _error(args, f"cannot write keys to {args.out}: {exc.strerror or exc}")
    if args.json:
        _print_json(
            {
                "key_id": files.key_id,
                "private_key": str(files.private_key_path),
                "public_key": str(files.public_key_path),
            }
        )
    else:
        sys.stdout.write(
            f"key id:      {files.key_id}\n"
            f"private key: {files.private_key_path} (mode 0600; keep it secret)\n"
            f"public key:  {files.public_key_path} (give this to verifiers)\n"
        )
    return Exit.OK


def _verify_proof(args: argparse.Namespace) -> int:
    try:
        keyring = Keyring.from_paths(args.public_key)
    except IntegrityError as exc:
        return _error(args, str(exc))
    try:
        data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        return _error(args, f"cannot read {args.file}: {exc.strerror or exc}")
    try:
        result = verify_bundle(load_bundle_json(data), keyring, origin=args.origin)
    except IntegrityError as exc:
        # Only the JSON parse raises; verify_bundle reports everything else as reasons.
        result = BundleVerification(False, (Reason(ReasonCode.MALFORMED, str(exc)),))
    if args.json:
        _print_json(result.to_json_dict())
    elif result.ok:
        sys.stdout.write(
            f"OK: event {result.event_id or '(no event.id)'} is leaf {result.leaf_index} of "
            f"{result.tree_size} in chain {result.origin}, signed by key {result.key_id}\n"
        )
    else:
        sys.stdout.write("FAILED: the proof does not hold\n")
        for reason in result.reasons:
            sys.stdout.write(f"  {reason.code}: {reason.message}\n")
    return Exit.OK if result.ok else Exit.FINDINGS


def register(subparsers: Any) -> None:
    """Add the ``keys`` and ``verify-proof`` sub-commands."""
    keys = subparsers.add_parser("keys", help="manage Ed25519 signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = keys_sub.add_parser("generate", help="write a new signing key pair and print its key id")
    gen.add_argument("--out", required=True, metavar="DIR", help="directory for the key files")
    gen.add_argument("--force", action="store_true", help="replace an existing private key")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(handler=_keys_generate)

    verify = subparsers.add_parser(
        "verify-proof", help="check an offline inclusion proof bundle (no Elasticsearch)"
    )
    verify.add_argument(
        "file", metavar="FILE", help="bundle JSON written by 'otel-audit prove' (- for stdin)"
    )
    verify.add_argument(
        "--public-key",
        required=True,
        action="append",
        metavar="KEY",
        help="public key PEM file or directory of them; repeat for several",
    )
    verify.add_argument("--origin", help="require the checkpoint to belong to this chain id")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(handler=_verify_proof)
