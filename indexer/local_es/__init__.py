"""The local Elasticsearch node for development and tests (see README.md here)."""

from indexer.local_es.manager import (
    ES_SHA512,
    ES_VERSION,
    ChecksumMismatchError,
    DistributionError,
    LocalElasticsearch,
    LocalEsConfig,
    LocalEsConfigError,
    LocalEsError,
    MissingToolError,
    NodeStatus,
    PortInUseError,
    StartError,
    StopError,
)

__all__ = [
    "ES_SHA512",
    "ES_VERSION",
    "ChecksumMismatchError",
    "DistributionError",
    "LocalElasticsearch",
    "LocalEsConfig",
    "LocalEsConfigError",
    "LocalEsError",
    "MissingToolError",
    "NodeStatus",
    "PortInUseError",
    "StartError",
    "StopError",
]
