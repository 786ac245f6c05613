"""``otel-audit witness`` (serve, vkey, submit) and ``otel-audit consistency OLD NEW``.

- ``witness serve --key PEM --name NAME --log ORIGIN=PUBKEY... --state FILE --listen H:P``
  runs a witness (:mod:`indexer.integrity.witness`); it prints
  ``{"listening": URL, "vkey": VKEY}`` on stdout and logs JSON lines to stderr.
- ``witness vkey --key PEM --name NAME`` prints the witness's verifier key (type 0x04), the
  string verifiers pass to ``verify --witness-key``.
- ``witness submit --witness URL --witness-key VKEY`` sends each chain's newest checkpoint
  (from the checkpoint directory) with a consistency proof built from the block records in
  Elasticsearch, and stores the cosigned note as ``<checkpoint dir>/<chain>/<seq>.note``.
- ``consistency OLD NEW`` checks offline that checkpoint NEW extends checkpoint OLD (files
  in JSON or signed-note form) with a proof from ``--proof FILE`` (base64 hashes, one per
  line) or, without it, built from Elasticsearch's block records (``--es-url``);
  ``--write-proof FILE`` saves the proof used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from indexer.state_files import write_atomic
from otel_audit.exits import Exit
from otel_audit.integrity import Checkpoint, IntegrityError, Keyring
from otel_audit.integrity.checkpoint import checkpoint_from_note, checkpoint_note
from otel_audit.integrity.keys import load_private_key
from otel_audit.integrity.note import (
    CosignatureVerifier,
    Note,
    NoteSignature,
    Verifier,
    parse_note,
    parse_vkey,
)

__all__ = [
    "check_cosignatures",
    "load_witness_keys",
    "proof_from_blocks",
    "register",
    "submit_chain",
]

_DEFAULT_STATE = "integrity-state"


def _out(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data) + "\n")
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def _error(args: argparse.Namespace, message: str, code: Exit = Exit.USAGE) -> int:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
    else:
        sys.stderr.write(f"otel-audit: error: {message}\n")
    return code


def _state_dir() -> Path:
    return Path(os.environ.get("OTEL_AUDIT_INTEGRITY__STATE_DIR", _DEFAULT_STATE))


def _keyring(paths: Sequence[str] | None) -> Keyring:
    return Keyring.from_paths(paths or [str(_state_dir() / "keys")])


def load_witness_keys(values: Sequence[str]) -> list[CosignatureVerifier]:
    """Witness verifier keys given as vkey strings or files holding one."""
    out: list[CosignatureVerifier] = []
    for value in values:
        text = value
        if "+" not in value or Path(value).is_file():
            try:
                text = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"witness key {value!r}: not a vkey and not readable") from exc
        verifier = parse_vkey(text)
        if not isinstance(verifier, CosignatureVerifier):
            raise ValueError(f"witness key {verifier.name}: not a cosignature (0x04) key")
        out.append(verifier)
    return out


def _load_checkpoint(path: str, keyring: Keyring) -> Checkpoint:
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"{"):
        from otel_audit.integrity import CheckpointStatus, verify_checkpoint

        cp = Checkpoint.from_json_dict(json.loads(data))
        status = verify_checkpoint(cp, keyring)
        if status is not CheckpointStatus.OK:
            raise IntegrityError(f"{path}: checkpoint signature check: {status}")
        return cp
    cp, _ = checkpoint_from_note(data, keyring)
    return cp


# -- proofs from Elasticsearch ---------------------------------------------------------


def proof_from_blocks(es: Any, chain_id: str, old_size: int, new: Checkpoint) -> list[bytes]:
    """The consistency proof from ``old_size`` to ``new`` built from ``audit-blocks``.

    Reads only the records from the one that starts at leaf ``old_size`` up to ``new``'s
    sequence (its frontier and the leaves since); the witness or the checker verifies the
    result, so these untrusted records cannot make a false proof pass.
    """
    from indexer.integrity.blocks import BlockRecord, iter_block_docs
    from otel_audit.integrity.consistency import consistency_proof_from_frontier
    from otel_audit.integrity.errors import ProofError

    if old_size == 0 or old_size == new.tree_size:
        return []
    leaves: list[bytes] = []
    frontier: tuple[bytes, ...] | None = None
    query = {
        "bool": {
            "filter": [
                {"term": {"chain_id": chain_id}},
                {"range": {"first_leaf": {"gte": old_size}}},
                {"range": {"sequence": {"lte": new.sequence}}},
            ]
        }
    }
    for _doc_id, source in iter_block_docs(es, query):
        rec = BlockRecord.from_document(source)
        if frontier is None:
            if rec.first_leaf != old_size:
                raise ProofError(f"no block record of {chain_id} starts at leaf {old_size}")
            frontier = rec.frontier
        if rec.first_leaf != old_size + len(leaves):
            raise ProofError(f"chain {chain_id} has a gap before block {rec.sequence}")
        leaves.extend(rec.leaf_hashes)
    if frontier is None or old_size + len(leaves) != new.tree_size:
        raise ProofError(
            f"audit-blocks holds leaves {old_size}..{old_size + len(leaves)} of {chain_id}, "
            f"the checkpoint needs up to {new.tree_size}"
        )
    return consistency_proof_from_frontier(old_size, frontier, leaves)


def _es(args: argparse.Namespace) -> Any:
    from elasticsearch import Elasticsearch

    from indexer.es_client import EsConnection, sync_client

    connection = EsConnection.from_env(url=args.es_url)
    es: Elasticsearch = sync_client(connection, request_timeout=60)
    return es


# -- cosigned notes next to the checkpoints -------------------------------------------


def _note_path(root: Path, cp: Checkpoint) -> Path:
    return root / cp.origin / f"{cp.sequence:020d}.note"


def _store_cosignatures(
    root: Path, cp: Checkpoint, note: bytes, new: Sequence[NoteSignature]
) -> Path:
    path = _note_path(root, cp)
    parsed = parse_note(note)
    sigs = list(parsed.signatures)
    if path.exists():
        try:
            old = parse_note(path.read_bytes())
        except IntegrityError:
            old = None
        if old is not None and old.text == parsed.text:
            sigs.extend(s for s in old.signatures if s not in sigs)
    fresh = {(s.name, s.key_id) for s in new}
    sigs = [s for s in sigs if (s.name, s.key_id) not in fresh] + list(new)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, Note(parsed.text, tuple(sigs)).to_bytes())
    return path


def _cosigned_size(root: Path, chain_id: str, verifier: Verifier, keyring: Keyring) -> int:
    directory = root / chain_id
    if not directory.is_dir():
        return 0
    for path in sorted(directory.glob("*.note"), reverse=True):
        try:
            cp, note = checkpoint_from_note(path.read_bytes(), keyring)
        except (IntegrityError, OSError):
            continue
        if any(verifier.verify(note.text, s) for s in note.signatures):
            return cp.tree_size
    return 0


def check_cosignatures(
    root: Path,
    keyring: Keyring,
    witnesses: Sequence[CosignatureVerifier],
    threshold: int,
    chain_id: str | None = None,
) -> list[dict[str, Any]]:
    """Findings for chains whose newest checkpoint lacks ``threshold`` valid cosignatures.

    Each finding names the chain and checkpoint sequence. A cosignature counts only when
    the note's text is exactly the checkpoint's signed body and the log's own signature
    verifies.
    """
    from indexer.integrity.checkpoint_store import DirectoryCheckpointStore

    store = DirectoryCheckpointStore(root)
    findings: list[dict[str, Any]] = []
    for chain in store.chains() if chain_id is None else [chain_id]:
        cp = store.latest(chain)
        if cp is None:
            continue
        where = f"checkpoint {cp.sequence} of chain {chain} (tree size {cp.tree_size})"
        path = _note_path(root, cp)
        names: list[str] = []
        problem = ""
        try:
            signed, note = checkpoint_from_note(path.read_bytes(), keyring)
            if signed != cp:
                problem = f"{path.name} is not the stored checkpoint"
            else:
                names = [
                    w.name
                    for w in witnesses
                    if any(w.verify(note.text, s) for s in note.signatures)
                ]
        except FileNotFoundError:
            problem = "no cosigned note"
        except (IntegrityError, OSError) as exc:
            problem = f"{path.name}: {exc}"
        if len(names) < threshold:
            findings.append(
                {
                    "kind": "uncosigned",
                    "chain_id": chain,
                    "sequence": cp.sequence,
                    "message": (
                        f"{where} has {len(names)} valid witness cosignatures, "
                        f"{threshold} required" + (f" ({problem})" if problem else "")
                    ),
                    "cosigned_by": names,
                }
            )
    return findings


def witness_post_check(
    args: argparse.Namespace, location: str | None, keyring: Keyring
) -> tuple[list[dict[str, Any]], str]:
    """``verify --witness-key``: the findings and an error (usage) message, if any."""
    if not args.witness_key:
        return [], ""
    try:
        witnesses = load_witness_keys(args.witness_key)
    except (ValueError, IntegrityError) as exc:
        return [], str(exc)
    threshold = args.witness_threshold or len(witnesses)
    if not 1 <= threshold <= len(witnesses):
        return [], f"--witness-threshold {threshold} is outside 1..{len(witnesses)}"
    if not location or not Path(location.removeprefix("dir:")).is_dir():
        return [], "--witness-key needs the checkpoint directory (--checkpoint-dir)"
    root = Path(location.removeprefix("dir:"))
    return check_cosignatures(root, keyring, witnesses, threshold, args.chain), ""


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """``--witness-key`` and ``--witness-threshold`` of ``verify``."""
    parser.add_argument(
        "--witness-key",
        action="append",
        metavar="VKEY",
        help="witness verifier key (or a file holding one); the newest checkpoint must be "
        "cosigned; repeatable",
    )
    parser.add_argument(
        "--witness-threshold",
        type=int,
        metavar="N",
        help="how many of the --witness-key witnesses must have cosigned (default all)",
    )


# -- commands ---------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import logging

    from indexer.integrity.witness import Witness, WitnessServer

    logs: dict[str, Keyring] = {}
    try:
        key = load_private_key(args.key)
        for item in args.log or []:
            origin, sep, path = item.partition("=")
            if not sep or not origin or not path:
                return _error(args, f"--log {item!r}: expected ORIGIN=PUBLIC_KEY")
            ring = logs.setdefault(origin, Keyring())
            for kid in Keyring.from_paths([path]).key_ids():
                public = Keyring.from_paths([path]).get(kid)
                if public is not None:
                    ring.add(public)
        witness = Witness(args.name, key, logs, args.state)
    except (IntegrityError, ValueError) as exc:
        return _error(args, str(exc))
    if not logs:
        return _error(args, "give at least one --log ORIGIN=PUBLIC_KEY")
    host, _, port = args.listen.rpartition(":")
    _setup_json_logging()
    try:
        server = WitnessServer((host or "127.0.0.1", int(port)), witness)
    except (OSError, ValueError) as exc:
        return _error(args, f"cannot listen on {args.listen}: {exc}", Exit.UNAVAILABLE)
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.stdout.write(json.dumps({"listening": server.url, "vkey": witness.vkey}) + "\n")
    sys.stdout.flush()
    logging.getLogger("otel_audit.witness").info(
        "listening", extra={"url": server.url, "logs": sorted(logs)}
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return Exit.OK


def _setup_json_logging() -> None:
    import logging
    import time

    standard = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "taskName"}

    class _Json(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            out: dict[str, Any] = {
                "ts": f"{ts}.{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
            fields = {k: v for k, v in vars(record).items() if k not in standard}
            if fields:
                out["fields"] = fields
            return json.dumps(out, default=str)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json())
    root = logging.getLogger("otel_audit.witness")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _vkey(args: argparse.Namespace) -> int:
    from otel_audit.integrity.note import Signer

    try:
        key = load_private_key(args.key)
        signer = Signer(args.name, key, cosigner=not args.log)
    except IntegrityError as exc:
        return _error(args, str(exc))
    vkey = signer.verifier.vkey()
    _out(args, {"ok": True, "vkey": vkey}, vkey)
    return Exit.OK


def submit_chain(
    es: Any,
    root: Path,
    chain: str,
    keyring: Keyring,
    url: str,
    verifier: CosignatureVerifier,
) -> dict[str, Any] | None:
    """Send ``chain``'s newest checkpoint in ``root`` to the witness at ``url``.

    On success the cosigned note is stored beside the checkpoint. Returns what happened
    (``status`` 200 = cosigned), or ``None`` when the chain has no checkpoint. Raises
    ``OSError`` (witness unreachable), Elasticsearch errors, or :class:`IntegrityError`
    (a proof that cannot be built, an answer without a valid cosignature).
    """
    from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
    from indexer.integrity.witness import SubmitResult, submit_checkpoint

    cp = DirectoryCheckpointStore(root).latest(chain)
    if cp is None:
        return None
    public = keyring.get(cp.key_id)
    if public is None:
        raise IntegrityError(f"chain {chain}: key {cp.key_id} is not in the keyring")
    note = checkpoint_note(cp, public)
    old = _cosigned_size(root, chain, verifier, keyring)
    answer: SubmitResult | None = None
    for _attempt in range(2):
        if old > cp.tree_size:
            break
        proof = proof_from_blocks(es, chain, old, cp)
        answer = submit_checkpoint(url, note, old, proof, verifier)
        if answer.status == 409 and not answer.refusal and answer.cosigned_size is not None:
            old = answer.cosigned_size
            continue
        break
    if answer is None:
        answer = SubmitResult(
            409,
            cosigned_size=old,
            message=f"the witness cosigned size {old}, above this checkpoint's",
        )
    entry: dict[str, Any] = {
        "chain_id": chain,
        "sequence": cp.sequence,
        "tree_size": cp.tree_size,
        "old_size": old,
        "status": answer.status,
    }
    if answer.status == 200:
        entry["note"] = str(_store_cosignatures(root, cp, note, answer.cosignatures))
    else:
        entry["error"] = answer.refusal or answer.message
    return entry


def _submit(args: argparse.Namespace) -> int:
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from indexer.integrity.checkpoint_store import DirectoryCheckpointStore

    try:
        keyring = _keyring(args.public_key)
        (verifier,) = load_witness_keys([args.witness_key])
        es = _es(args)
    except (IntegrityError, ValueError) as exc:
        return _error(args, str(exc))
    root = Path(args.checkpoint_dir or _state_dir() / "checkpoints")
    chains = [args.chain] if args.chain else DirectoryCheckpointStore(root).chains()
    results: list[dict[str, Any]] = []
    try:
        for chain in chains:
            entry = submit_chain(es, root, chain, keyring, args.witness, verifier)
            if entry is not None:
                results.append(entry)
    except (TransportError, ApiError, OSError) as exc:
        return _error(args, f"witness submit: {exc}", Exit.UNAVAILABLE)
    except IntegrityError as exc:
        return _error(args, f"witness submit: {exc}", Exit.FINDINGS)
    finally:
        es.close()
    ok = all(r["status"] == 200 for r in results)
    text = "\n".join(
        f"chain {r['chain_id']} checkpoint {r['sequence']} (size {r['tree_size']}): "
        + ("cosigned" if r["status"] == 200 else f"refused {r['status']} {r.get('error', '')}")
        for r in results
    )
    _out(args, {"ok": ok, "results": results}, text or "no checkpoints")
    return Exit.OK if ok else Exit.FINDINGS


def _consistency(args: argparse.Namespace) -> int:
    from otel_audit.integrity.consistency import format_proof_lines, parse_proof_lines
    from otel_audit.integrity.errors import ProofError
    from otel_audit.integrity.merkle import verify_consistency

    try:
        keyring = _keyring(args.public_key)
        old = _load_checkpoint(args.old, keyring)
        new = _load_checkpoint(args.new, keyring)
    except (IntegrityError, OSError, ValueError) as exc:
        return _error(args, str(exc))
    if old.origin != new.origin:
        return _error(
            args, f"the checkpoints are of different chains: {old.origin} and {new.origin}"
        )
    if args.proof:
        try:
            proof = parse_proof_lines(Path(args.proof).read_text(encoding="ascii"), args.proof)
        except (OSError, ValueError, ProofError) as exc:
            return _error(args, f"--proof: {exc}")
    elif old.tree_size > new.tree_size:
        proof = []
    else:
        from elastic_transport import TransportError
        from elasticsearch import ApiError

        try:
            es = _es(args)
        except ValueError as exc:
            return _error(args, str(exc))
        try:
            proof = proof_from_blocks(es, old.origin, old.tree_size, new)
        except (TransportError, ApiError) as exc:
            return _error(args, f"Elasticsearch: {exc}", Exit.UNAVAILABLE)
        except ProofError as exc:
            return _error(args, str(exc), Exit.FINDINGS)
        finally:
            es.close()
    if args.write_proof:
        Path(args.write_proof).write_text(format_proof_lines(proof), encoding="ascii")
    data: dict[str, Any] = {
        "origin": old.origin,
        "old": {"sequence": old.sequence, "tree_size": old.tree_size},
        "new": {"sequence": new.sequence, "tree_size": new.tree_size},
        "proof_hashes": len(proof),
    }
    try:
        verify_consistency(old.tree_size, new.tree_size, proof, old.root_hash, new.root_hash)
    except ProofError as exc:
        data.update(ok=False, error=str(exc))
        _out(
            args,
            data,
            f"NOT CONSISTENT: checkpoint {new.sequence} does not extend {old.sequence}: {exc}",
        )
        return Exit.FINDINGS
    data["ok"] = True
    _out(
        args,
        data,
        f"CONSISTENT: {old.origin} checkpoint {new.sequence} (size {new.tree_size}) extends "
        f"checkpoint {old.sequence} (size {old.tree_size})",
    )
    return Exit.OK


def register(subparsers: Any) -> None:
    """Add the ``witness`` and ``consistency`` sub-commands."""
    w = subparsers.add_parser(
        "witness", help="run a checkpoint witness, or submit checkpoints to one"
    )
    ws = w.add_subparsers(dest="witness_command", metavar="ACTION", required=True)

    s = ws.add_parser("serve", help="run the witness HTTP service")
    s.add_argument("--key", required=True, help="the witness's private key (PEM file)")
    s.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example/w1")
    s.add_argument(
        "--log", action="append", metavar="ORIGIN=PUBLIC_KEY", help="a log it witnesses; repeatable"
    )
    s.add_argument(
        "--state", required=True, help="state file (the newest cosigned checkpoint per log)"
    )
    s.add_argument("--listen", default="127.0.0.1:8480", metavar="HOST:PORT")
    s.add_argument("--json", action="store_true", help="errors as JSON")
    s.set_defaults(handler=_serve)

    v = ws.add_parser(
        "vkey", help="print the verifier key of a witness (or, with --log, a log) key"
    )
    v.add_argument("--key", required=True, help="private key (PEM file)")
    v.add_argument("--name", required=True, help="key name (a log's is its chain id)")
    v.add_argument("--log", action="store_true", help="a log's note key (0x01), not a witness's")
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_vkey)

    u = ws.add_parser(
        "submit", help="send the newest checkpoints to a witness, store its cosignatures"
    )
    u.add_argument("--witness", required=True, metavar="URL")
    u.add_argument(
        "--witness-key", required=True, metavar="VKEY", help="the witness's vkey (or a file)"
    )
    u.add_argument("--checkpoint-dir", metavar="DIR")
    u.add_argument("--public-key", action="append", metavar="KEY")
    u.add_argument("--chain", metavar="ID")
    u.add_argument("--es-url", help="Elasticsearch URL (default OTEL_AUDIT_ES_URL)")
    u.add_argument("--json", action="store_true")
    u.set_defaults(handler=_submit)

    c = subparsers.add_parser("consistency", help="check offline that checkpoint NEW extends OLD")
    c.add_argument("old", metavar="OLD", help="older checkpoint file (JSON or signed note)")
    c.add_argument("new", metavar="NEW", help="newer checkpoint file (JSON or signed note)")
    c.add_argument("--public-key", action="append", metavar="KEY")
    c.add_argument(
        "--proof", metavar="FILE", help="proof file; without it, built from Elasticsearch"
    )
    c.add_argument("--write-proof", metavar="FILE", help="save the proof used")
    c.add_argument("--es-url", help="Elasticsearch URL (default OTEL_AUDIT_ES_URL)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=_consistency)
