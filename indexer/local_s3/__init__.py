"""The local S3 server for development and tests (see README.md here)."""

from indexer.local_s3.config import LocalS3Config, LocalS3ConfigError
from indexer.local_s3.manager import LocalS3, LocalS3Error, S3Status

__all__ = ["LocalS3", "LocalS3Config", "LocalS3ConfigError", "LocalS3Error", "S3Status"]
