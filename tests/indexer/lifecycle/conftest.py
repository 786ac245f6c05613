"""Fixtures of the lifecycle tests: the real S3 server (s3proxy, started by the project's
own code like the local Elasticsearch) and a clean Elasticsearch with templates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from indexer.local_s3 import LocalS3
from indexer.templates import install_templates
from tests.support.lifecycle_harness import local_s3


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A local S3 server on a free port for the whole session."""
    with local_s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def lifecycle_es(clean_es: Elasticsearch) -> Elasticsearch:
    """A wiped Elasticsearch with the project's templates installed."""
    install_templates(clean_es)
    return clean_es


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
