"""The local Elasticsearch node or cluster for development and tests (see README.md here)."""

from indexer.local_es.manager import (
    ELASTIC_USER,
    ES_SHA512,
    ES_VERSION,
    ChecksumMismatchError,
    DistributionError,
    LocalElasticsearch,
    LocalEsConfig,
    LocalEsConfigError,
    LocalEsError,
    LocalUser,
    MemberStatus,
    MissingToolError,
    NodeStatus,
    PortInUseError,
    StartError,
    StopError,
)

__all__ = [
    "ELASTIC_USER",
    "ES_SHA512",
    "ES_VERSION",
    "ChecksumMismatchError",
    "DistributionError",
    "LocalElasticsearch",
    "LocalEsConfig",
    "LocalEsConfigError",
    "LocalEsError",
    "LocalUser",
    "MemberStatus",
    "MissingToolError",
    "NodeStatus",
    "PortInUseError",
    "StartError",
    "StopError",
]
