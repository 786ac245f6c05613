"""A checkpoint witness (C2SP ``tlog-witness``) and the client that submits to it.

The witness is a separate HTTP process with its own Ed25519 key and state file. For each
log origin it trusts (origin -> log public keys) it remembers the newest checkpoint it
cosigned. ``POST /add-checkpoint`` carries::

    old <size of the last checkpoint the witness cosigned>
    <base64 consistency proof hash, one per line>
    <blank line>
    <checkpoint signed note>

The witness checks the log's signature, then that the new tree extends the one it
cosigned (RFC 9162 consistency proof), records the new checkpoint in its state file
(written to a temporary file, fsynced, renamed) and only then answers ``200`` with its
``cosignature/v1`` line. Status codes follow ``tlog-witness``: 400 malformed, 403 no valid
log signature, 404 unknown origin, 409 the old size is not the witness's, 422 a bad proof
for the empty tree or a non-empty root of size 0. A **split view** (a different root at
the size the witness cosigned, or a tree whose proof does not lead from the cosigned
root) is answered ``409 Conflict`` too, with header ``Witness-Refusal: split-view`` and a
log line at error level: the log signed two histories, and the witness will never cosign
the second. (The protocol's text says 422 for a proof that does not verify; 409 names
the conflict, and the body still carries the cosigned size as the protocol's 409 does.)

``GET /<sha256(origin) hex>/checkpoint`` serves the newest cosigned checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from indexer.state_files import fsync_dir, write_atomic
from otel_audit.integrity.checkpoint import log_verifiers
from otel_audit.integrity.errors import IntegrityError, ProofError
from otel_audit.integrity.keys import Ed25519PrivateKey, Keyring
from otel_audit.integrity.merkle import EMPTY_ROOT, verify_consistency
from otel_audit.integrity.note import (
    CosignatureVerifier,
    Note,
    NoteSignature,
    NoteVerificationError,
    Signer,
    open_note,
    parse_note,
)

__all__ = [
    "SIZE_CONTENT_TYPE",
    "AddResult",
    "SubmitResult",
    "Witness",
    "WitnessServer",
    "parse_add_checkpoint",
    "submit_checkpoint",
]

SIZE_CONTENT_TYPE = "text/x.tlog.size"
_MAX_BODY = 64 * 1024
_MAX_PROOF_LINES = 63
_log = logging.getLogger("otel_audit.witness")


class RequestError(Exception):
    """A request the witness refuses; carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class AddResult:
    """The witness's answer to one ``add-checkpoint``."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    refusal: str = ""


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], Note]:
    """Split an ``add-checkpoint`` body; raises :class:`RequestError` (400) when malformed."""
    head, sep, rest = body.partition(b"\n\n")
    if not sep:
        raise RequestError(400, "request has no blank line after the old size and proof")
    lines = head.split(b"\n")
    first = lines[0]
    if not first.startswith(b"old "):
        raise RequestError(400, "request does not start with an 'old <size>' line")
    digits = first[4:]
    if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
        raise RequestError(400, "old size is not a plain decimal")
    old = int(digits)
    if len(lines) - 1 > _MAX_PROOF_LINES:
        raise RequestError(400, f"more than {_MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, "a consistency proof line is not base64") from exc
        if len(raw) != 32:
            raise RequestError(400, "a consistency proof line is not a 32-byte hash")
        proof.append(raw)
    try:
        note = parse_note(rest)
    except IntegrityError as exc:
        raise RequestError(400, f"checkpoint: {exc}") from exc
    return old, proof, note


def _checkpoint_head(text: str) -> tuple[str, int, bytes]:
    lines = text.split("\n")
    if len(lines) < 4:
        raise RequestError(400, "checkpoint has fewer than three lines")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit() or (len(size_text) > 1 and size_text[0] == "0"):
        raise RequestError(400, "checkpoint size is not a plain decimal")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise RequestError(400, "checkpoint root hash is not base64") from exc
    if len(root) != 32:
        raise RequestError(400, "checkpoint root hash is not 32 bytes")
    return origin, int(size_text), root


class Witness:
    """The witness's logic and state, independent of HTTP (thread-safe)."""

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        logs: Mapping[str, Keyring],
        state_path: str | os.PathLike[str],
        *,
        clock: Any = time.time,
    ) -> None:
        self.signer = Signer(name, private_key, cosigner=True)
        self.logs = dict(logs)
        self.state_path = Path(state_path)
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, Any]] = self._load()

    @property
    def vkey(self) -> str:
        """This witness's verifier key (type 0x04), what verifiers configure."""
        return self.signer.verifier.vkey()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"witness state {self.state_path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != "otel-audit.witness-state.v1":
            raise ValueError(f"witness state {self.state_path} is not a witness state file")
        logs = data.get("logs")
        if not isinstance(logs, dict):
            raise ValueError(f"witness state {self.state_path} has no logs object")
        return logs

    def _save(self) -> None:
        data = {"format": "otel-audit.witness-state.v1", "logs": self._state}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_path, json.dumps(data, indent=1, sort_keys=True).encode())
        fsync_dir(self.state_path.parent)

    def latest(self, origin: str) -> str | None:
        """The newest cosigned checkpoint note of ``origin``."""
        with self._lock:
            entry = self._state.get(origin)
            return None if entry is None else str(entry["note"])

    def latest_by_hash(self, origin_hash: str) -> str | None:
        with self._lock:
            for origin, entry in self._state.items():
                if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                    return str(entry["note"])
        return None

    def add_checkpoint(self, body: bytes) -> AddResult:
        """Handle one ``add-checkpoint`` request body."""
        try:
            return self._add(body)
        except RequestError as exc:
            _log.warning("checkpoint refused", extra={"status": exc.status, "reason": str(exc)})
            return AddResult(exc.status, f"{exc}\n".encode())

    def _add(self, body: bytes) -> AddResult:
        old, proof, note = parse_add_checkpoint(body)
        origin, size, root = _checkpoint_head(note.text)
        ring = self.logs.get(origin)
        if ring is None:
            raise RequestError(404, f"unknown log origin {origin!r}")
        try:
            open_note(note, log_verifiers(origin, ring))
        except NoteVerificationError as exc:
            raise RequestError(403, f"checkpoint signature: {exc}") from exc
        if old > size:
            raise RequestError(400, f"old size {old} is above the checkpoint size {size}")
        if size == 0 and root != EMPTY_ROOT:
            raise RequestError(422, "a checkpoint of size 0 must have the empty tree's root")
        if old == 0 and proof:
            raise RequestError(422, "a proof from size 0 must be empty")
        with self._lock:
            entry = self._state.get(origin)
            known_size = int(entry["size"]) if entry else 0
            known_root = base64.b64decode(entry["root"]) if entry else EMPTY_ROOT
            if old != known_size:
                _log.warning(
                    "old size does not match the cosigned size",
                    extra={"origin": origin, "old": old, "cosigned_size": known_size},
                )
                return AddResult(409, f"{known_size}\n".encode(), SIZE_CONTENT_TYPE)
            if old > 0:
                if old == size and root != known_root:
                    return self._split_view(
                        origin, known_size, size, "a different root at the cosigned size"
                    )
                if old < size:
                    try:
                        verify_consistency(old, size, proof, known_root, root)
                    except ProofError as exc:
                        return self._split_view(
                            origin,
                            known_size,
                            size,
                            f"the tree does not extend the cosigned one ({exc})",
                        )
                elif proof:
                    raise RequestError(422, "equal sizes need an empty proof")
            timestamp = max(int(self._clock()), int(entry.get("timestamp", 0)) if entry else 0)
            cosig = self.signer.sign(note.text, timestamp)
            stored = Note(note.text, (*note.signatures, cosig)).to_bytes().decode()
            previous = self._state.get(origin)
            self._state[origin] = {
                "size": size,
                "root": base64.b64encode(root).decode("ascii"),
                "timestamp": timestamp,
                "note": stored,
            }
            try:
                self._save()
            except OSError:
                if previous is None:
                    del self._state[origin]
                else:
                    self._state[origin] = previous
                raise
        _log.info("cosigned", extra={"origin": origin, "size": size, "old": old})
        return AddResult(200, cosig.line().encode())

    def _split_view(self, origin: str, known: int, size: int, reason: str) -> AddResult:
        _log.error(
            "split view refused",
            extra={"origin": origin, "cosigned_size": known, "size": size, "reason": reason},
        )
        return AddResult(
            409, f"{known}\n".encode(), SIZE_CONTENT_TYPE, refusal=f"split-view: {reason}"
        )


class _Handler(BaseHTTPRequestHandler):
    server: WitnessServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str, refusal: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if refusal:
            self.send_header("Witness-Refusal", refusal)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/add-checkpoint":
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, b"Content-Length required\n", "text/plain")
            return
        if length > _MAX_BODY or length < 0:
            self._send(413, f"request larger than {_MAX_BODY} bytes\n".encode(), "text/plain")
            self.close_connection = True
            return
        result = self.server.witness.add_checkpoint(self.rfile.read(length))
        self._send(result.status, result.body, result.content_type, result.refusal)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if self.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
            return
        if len(parts) == 2 and parts[1] == "checkpoint":
            note = self.server.witness.latest_by_hash(parts[0])
            if note is not None:
                self._send(200, note.encode(), "text/plain; charset=utf-8")
                return
        self._send(404, b"not found\n", "text/plain")


class WitnessServer(ThreadingHTTPServer):
    """The witness's HTTP server (``serve_forever`` / ``shutdown``)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness) -> None:
        super().__init__(address, _Handler)
        self.witness = witness

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{host_text}:{port}"


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What a witness answered: cosignatures on 200, the cosigned size on 409."""

    status: int
    cosignatures: tuple[NoteSignature, ...] = ()
    cosigned_size: int | None = None
    message: str = ""
    refusal: str = ""


def submit_checkpoint(
    url: str,
    note: bytes,
    old_size: int,
    proof: Sequence[bytes],
    verifier: CosignatureVerifier,
    *,
    timeout_s: float = 10.0,
) -> SubmitResult:
    """POST ``add-checkpoint`` and check the answer's cosignature with ``verifier``.

    Raises ``OSError`` when the witness cannot be reached and
    :class:`NoteVerificationError` when it answers 200 without a valid cosignature.
    """
    body = f"old {old_size}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof)
    body += b"\n" + note
    req = urllib.request.Request(url.rstrip("/") + "/add-checkpoint", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, data, headers = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, data, headers = exc.code, exc.read(), exc.headers
    text = data.decode("utf-8", "replace")
    refusal = headers.get("Witness-Refusal", "") if headers else ""
    if status == 200:
        parsed = parse_note(note)
        sigs: list[NoteSignature] = []
        for line in text.splitlines():
            full = parse_note(parsed.text + "\n" + line + "\n")
            sigs.extend(s for s in full.signatures if verifier.matches(s))
        good = tuple(s for s in sigs if verifier.verify(parsed.text, s))
        if not good:
            raise NoteVerificationError(
                f"witness {verifier.name} answered without a valid cosignature"
            )
        return SubmitResult(200, good)
    size = None
    if status == 409 and text.strip().isdigit():
        size = int(text.strip())
    return SubmitResult(status, cosigned_size=size, message=text.strip(), refusal=refusal)
