"""The ``lifecycle:`` section of the receiver configuration: tiers, retention, the cold store.

Example (the defaults meet PCI DSS 10.5.1: three months immediately available, twelve
months kept)::

    lifecycle:
      enabled: true
      interval_s: 3600            # how often serve runs it (one receiver at a time)
      hot_days: 90                # searchable in Elasticsearch
      retain_days: 365            # kept at all (hot + archive)
      rules:                      # per category, per tenant, or both; most specific wins
        - {category: authentication, hot_days: 30}
        - {tenant: acme, retain_days: 2555}
        - {tenant: acme, category: data_access, hot_days: 180, retain_days: 2555}
      cold_store:
        url: s3://audit-archive/otel-audit   # or a directory (the default: ./archive)
        endpoint_url: https://s3.eu-central-1.amazonaws.com
        region: eu-central-1
        # access_key_id / secret_access_key, else the AWS default chain (env, profile, role)

Every top-level key can be overridden by ``OTEL_AUDIT_LIFECYCLE__<KEY>``; the cold store's
secret also by ``OTEL_AUDIT_COLD_STORE_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ColdStoreConfig",
    "DayPolicy",
    "LifecycleConfig",
    "PolicyRule",
]

PCI_HOT_DAYS = 90
"""PCI DSS 10.5.1: at least three months immediately available for analysis."""
PCI_RETAIN_DAYS = 365
"""PCI DSS 10.5.1: audit log history kept for at least twelve months."""


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """Hot and retention days for a category, a tenant, or one category of one tenant."""

    category: str = ""
    """Audit category (``audit.category``); empty: every category."""
    tenant: str = ""
    """Tenant id (``organization.id``); empty: every tenant (and events without one)."""
    hot_days: int = 0
    """Days searchable in Elasticsearch; 0: the section's ``hot_days``."""
    retain_days: int = 0
    """Days kept at all; 0: the section's ``retain_days``."""

    @property
    def specificity(self) -> int:
        """Tenant and category (3) beat tenant (2), which beats category (1)."""
        return (2 if self.tenant else 0) + (1 if self.category else 0)

    def matches(self, category: str, tenant: str) -> bool:
        """Whether events of this category and tenant fall under the rule."""
        return (not self.category or self.category == category) and (
            not self.tenant or self.tenant == tenant
        )


@dataclass(frozen=True, slots=True)
class DayPolicy:
    """What the policy says about one day's events, taken over everything in it."""

    hot_days: int
    retain_days: int


@dataclass(frozen=True, slots=True)
class ColdStoreConfig:
    """Where archives go: a directory, or an S3-compatible bucket and prefix."""

    url: str = "archive"
    """A directory path (``file://`` optional) or ``s3://bucket/prefix``."""
    endpoint_url: str = ""
    """S3 endpoint for a non-AWS store (MinIO, s3proxy, Ceph); empty: AWS."""
    region: str = "us-east-1"
    """S3 region."""
    access_key_id: str = ""
    """S3 access key id; empty: the AWS default credential chain."""
    secret_access_key: str = field(default="", repr=False)
    """S3 secret; never logged."""
    create_bucket: bool = False
    """Create the bucket when missing (development; production buckets are made with
    object lock by their owner, see docs/lifecycle.md)."""
    cache_dir: str = ""
    """Local cache of archived day files read by queries; empty: a temporary directory."""
    cache_max_bytes: int = 2 * 1024 * 1024 * 1024
    """Size limit of that cache."""

    def validate(self) -> None:
        """Raise ValueError naming the key."""
        if not self.url:
            raise ValueError("cold_store.url: must not be empty")
        if self.url.startswith("s3://"):
            bucket = self.url[5:].split("/", 1)[0]
            if not 3 <= len(bucket) <= 63:
                raise ValueError(f"cold_store.url: {bucket!r} is not an S3 bucket name")
        elif "://" in self.url and not self.url.startswith("file://"):
            raise ValueError(
                f"cold_store.url: {self.url!r} is neither a directory nor s3://bucket/prefix"
            )


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """How audit days move from the hot index to the archive and out; one comment per field."""

    enabled: bool = True
    """Run the lifecycle inside ``serve`` every ``interval_s``."""
    interval_s: float = 3600.0
    """Seconds between scheduled runs."""
    hot_days: int = PCI_HOT_DAYS
    """Days a day's events stay searchable in Elasticsearch (0: archive once the day ends)."""
    retain_days: int = PCI_RETAIN_DAYS
    """Days a day's events are kept at all; past them the archive is deleted (recorded)."""
    rules: tuple[PolicyRule, ...] = ()
    """Overrides per category and/or tenant; a day keeps the longest that applies to any
    of its events."""
    cold_store: ColdStoreConfig = field(default_factory=ColdStoreConfig)
    """Where archives are written."""
    lease_ttl_s: float = 600.0
    """How long the lifecycle lease in Elasticsearch lasts without renewal."""
    restore_keep_days: int = 7
    """Days a restored day stays in Elasticsearch before the policy removes it again."""
    spans_follow_events: bool = True
    """Keep a day's spans while that day's (or the next day's) events are hot, so every
    hot event's trace view works; ``spans.retention_days`` is the minimum."""
    public_key_paths: tuple[str, ...] = ()
    """Extra public keys (files or directories) that blocks may be signed with (rotation)."""

    def validate(self) -> None:
        """Cross-field rules; raise ValueError naming the key."""
        if self.hot_days < 0:
            raise ValueError("hot_days: must not be negative")
        if self.retain_days < 1:
            raise ValueError("retain_days: must be at least 1")
        if self.retain_days < self.hot_days:
            raise ValueError(
                f"retain_days: {self.retain_days} is shorter than hot_days {self.hot_days}"
            )
        if self.interval_s <= 0:
            raise ValueError("interval_s: must be > 0")
        if self.lease_ttl_s < 10:
            raise ValueError("lease_ttl_s: must be at least 10")
        for i, rule in enumerate(self.rules):
            if not rule.category and not rule.tenant:
                raise ValueError(f"rules[{i}]: give a category, a tenant or both")
            if rule.hot_days < 0 or rule.retain_days < 0:
                raise ValueError(f"rules[{i}]: days must not be negative")
            policy = self.policy_for(rule.category, rule.tenant)
            if policy.retain_days < policy.hot_days:
                raise ValueError(
                    f"rules[{i}]: retain_days {policy.retain_days} is shorter than hot_days "
                    f"{policy.hot_days}"
                )
        self.cold_store.validate()

    def policy_for(self, category: str, tenant: str) -> DayPolicy:
        """Hot and retention days of events of one category and tenant."""
        hot, retain = self.hot_days, self.retain_days
        best_hot = best_retain = -1
        for rule in self.rules:
            if not rule.matches(category, tenant):
                continue
            if rule.hot_days and rule.specificity > best_hot:
                hot, best_hot = rule.hot_days, rule.specificity
            if rule.retain_days and rule.specificity > best_retain:
                retain, best_retain = rule.retain_days, rule.specificity
        return DayPolicy(hot_days=hot, retain_days=retain)

    def policy_for_day(self, present: list[tuple[str, str]]) -> DayPolicy:
        """The policy of a day holding events of these (category, tenant) pairs: the
        longest of each, so no event leaves a tier before its own rule allows."""
        if not present:
            return DayPolicy(self.hot_days, self.retain_days)
        policies = [self.policy_for(c, t) for c, t in present]
        return DayPolicy(
            hot_days=max(p.hot_days for p in policies),
            retain_days=max(p.retain_days for p in policies),
        )
