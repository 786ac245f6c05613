"""Running verify against Elasticsearch (with the lifecycle's signed records) in tests."""

from __future__ import annotations

from pathlib import Path

from elasticsearch import Elasticsearch

from indexer.integrity.checkpoint_store import DirectoryCheckpointStore
from indexer.integrity.verify import VerifyOptions, VerifyReport, verify
from indexer.lifecycle.verify_archive import PolicyDeletions
from otel_audit.integrity import Keyring


def keyring(tmp: Path) -> Keyring:
    return Keyring.from_paths([tmp / "integrity-state" / "keys"])


def verify_es(es: Elasticsearch, tmp: Path) -> VerifyReport:
    es.indices.refresh(index="audit-*")
    ring = keyring(tmp)
    options = VerifyOptions(grace_s=0.0, processes=False)
    options.policy_deletions = PolicyDeletions.from_elasticsearch(es, ring)
    store = DirectoryCheckpointStore(tmp / "integrity-state" / "checkpoints")
    return verify(es, ring, store, options)
