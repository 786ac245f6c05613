//! The ingest write path for plain records, done while decoding: validate, build the stored
//! document, serialize it with sorted keys, hash its Merkle leaf.
//!
//! The Python path is the contract: `otel_audit.validate` (its fast path `_plain_valid`),
//! `otel_audit.document.build_document_and_plainness`, `indexer.bulk.BulkItem.encoded` and
//! `otel_audit.integrity.leaf_hash_of_event`; `receiver/ingest/prepare.py` says which records
//! are prepared here, and `tests/receiver/ingest/test_prepare_native.py` holds the output
//! byte-identical to that path's. Whatever this module is not certain of (a value that
//! would be cut, a float, a nested value, a non-ASCII identifier, a duplicate key, a
//! collision between stored paths, an IPv6 address) makes [`prepare`] answer `None`, and
//! Python does the whole job for that record, as it can for any record.
//!
//! The schema says where each value goes and what the literal values are: besides its
//! fields, the plan hands over the stored path of every role (`timestamp`, `dataset`,
//! `flags`, ...), the attributes read by role, the literal values and the record fields'
//! limits (see `otel_audit.schema`). The roles, what each value means, are this module's;
//! the names and values in the document are all the schema's.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::content_hash::string;
use crate::otlp::{KeyValue, Lenient, LogRecord, Value};

const MAX_SAFE_INT: i64 = (1 << 53) - 1;
const NS_PER_S: i128 = 1_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Required {
    Always,
    Optional,
    ResourceCategories,
    Derived,
}

struct FieldPlan {
    attribute: Vec<u8>,
    stored: String,
    path: Vec<String>,
    required: Required,
    reject: bool,
    truncate: bool,
    max_bytes: i64,
    enum_values: Option<Vec<Vec<u8>>>,
    pattern: Option<Pattern>,
    client_supplied: bool,
    ip_copy: Vec<Vec<String>>,
    /// Ranks (see [`Layout`]) of `path` and of each `ip_copy` path.
    rank: u16,
    ip_copy_ranks: Vec<u16>,
    /// An array of strings: never prepared here (the validator's reference checks arrays).
    array: bool,
    /// Attributes that stand in for this one when it is absent: a record using one is left
    /// to Python.
    aliases: Vec<Vec<u8>>,
    /// The stored value is also listed in `related.user`.
    related_user: bool,
    /// Per value of this field: (the field whose stored value is copied, the copy's path);
    /// the copies' ranks are in `copy_ranks`, in the same order.
    actor_copies: ActorCopies,
    copy_ranks: Vec<Vec<u16>>,
}

/// Per value of a field: (attribute whose stored value is copied, the path of the copy).
type ActorCopies = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<String>)>)>;

/// How `event.type` follows from the category, the action's verb and the outcome
/// (`otel_audit.schema.EcsTypeRules`).
struct EcsTypes {
    verbs: HashMap<Vec<u8>, String>,
    /// Per category: the verb types it allows, its types per outcome, its default types.
    categories: HashMap<Vec<u8>, EcsCategoryTypes>,
}

struct EcsCategoryTypes {
    verbs: Vec<String>,
    outcomes: HashMap<Vec<u8>, Vec<String>>,
    default: Vec<String>,
}

impl EcsTypes {
    fn new(settings: &Bound<'_, PyAny>) -> PyResult<Self> {
        let settings = settings.cast::<PyDict>()?;
        let verbs: HashMap<String, String> = item(settings, "verbs")?.extract()?;
        let mut categories = HashMap::new();
        for (name, rules) in item(settings, "categories")?.cast::<PyDict>()?.iter() {
            let rules = rules.cast_into::<PyDict>()?;
            let outcomes: HashMap<String, Vec<String>> = item(&rules, "outcomes")?.extract()?;
            categories.insert(
                name.extract::<String>()?.into_bytes(),
                EcsCategoryTypes {
                    verbs: item(&rules, "verbs")?.extract()?,
                    outcomes: outcomes
                        .into_iter()
                        .map(|(k, v)| (k.into_bytes(), v))
                        .collect(),
                    default: item(&rules, "default")?.extract()?,
                },
            );
        }
        Ok(EcsTypes {
            verbs: verbs
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v))
                .collect(),
            categories,
        })
    }

    /// `EcsTypeRules.types`.
    fn types<'a>(&'a self, category: &[u8], action: &[u8], outcome: &[u8]) -> Vec<&'a str> {
        let Some(rules) = self.categories.get(category) else {
            return Vec::new();
        };
        let last = action.rsplit(|&b| b == b'.').next().unwrap_or_default();
        let word = last.rsplit(|&b| b == b'_').next().unwrap_or_default();
        let verb = self.verbs.get(last).or_else(|| self.verbs.get(word));
        let mut out: Vec<&str> = Vec::with_capacity(2);
        if let Some(kind) = verb.filter(|k| rules.verbs.contains(k)) {
            out.push(kind);
        }
        for kind in rules.outcomes.get(outcome).into_iter().flatten() {
            if !out.contains(&kind.as_str()) {
                out.push(kind);
            }
        }
        if out.is_empty() {
            out.extend(rules.default.iter().map(String::as_str));
        }
        out
    }
}

/// A schema field's pattern, matched against printable ASCII only (see [`valid_fields`]).
enum Pattern {
    /// The pattern compiled here: only for sources in the syntax both engines read alike on
    /// printable ASCII (see [`rust_pattern`]).
    Rust(regex::bytes::Regex),
    /// The compiled Python `re.Pattern`, whose `fullmatch` decides.
    Python(Py<PyAny>),
}

/// `source` compiled for a full match when it keeps to the syntax Python's `re` and the
/// `regex` crate read alike on printable ASCII text: literals, classes, groups, `|`,
/// repetition, anchors and the escapes `\d \w \s` (and their negations) or of
/// punctuation. No `(?` constructs (flags, lookaround, named groups), no back-references.
fn rust_pattern(source: &str) -> Option<regex::bytes::Regex> {
    if !source.is_ascii() || source.contains("(?") {
        return None;
    }
    let mut escaped = false;
    for c in source.chars() {
        if escaped {
            if c.is_ascii_alphanumeric() && !"dDwWsS".contains(c) {
                return None;
            }
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        }
    }
    regex::bytes::Regex::new(&format!(r"\A(?:{source})\z")).ok()
}

struct ResourceFieldPlan {
    attribute: Vec<u8>,
    /// An older attribute read when this one is absent.
    alias: Option<Vec<u8>>,
    path: Vec<String>,
    always: bool,
    max_bytes: i64,
    rank: u16,
}

/// A schema's settings, read once from the dict `receiver.ingest.prepare._plan_settings`
/// builds, and for one writer (`Plan.with_writer`) what it may send and its stored object.
#[pyclass(frozen, module = "otel_audit_native")]
pub struct Plan {
    schema: Arc<SchemaPlan>,
    writer: Option<WriterRule>,
}

impl std::ops::Deref for Plan {
    type Target = SchemaPlan;

    fn deref(&self) -> &SchemaPlan {
        &self.schema
    }
}

/// One writer's allowance (`receiver.identity.Writer.refusal`) and the member that stores
/// it. A record outside the allowance is not prepared: Python refuses it, with its reason.
struct WriterRule {
    /// `,"<writer field>":{...}`, the last member of every document (it sorts last).
    member: Vec<u8>,
    /// The `service.name` values it may send; None: any.
    services: Option<HashSet<Vec<u8>>>,
    /// The tenants it may send, the empty one standing for "no tenant"; None: any.
    tenants: Option<HashSet<Vec<u8>>>,
    /// The layout rank of the stored service name (the resource's share of the document
    /// holds it by rank) and the index of the tenant field in `fields`.
    service_rank: u16,
    tenant_field: usize,
}

impl WriterRule {
    /// `Writer.refusal(service, tenant) is None`, for the stored values of a prepared record
    /// (neither is ever an empty string: an empty value is not stored, or not prepared).
    fn allows(&self, service: Option<&[u8]>, tenant: Option<&[u8]>) -> bool {
        let service_ok = match (&self.services, service) {
            (None, _) => true,
            (Some(allowed), Some(name)) => allowed.contains(name),
            (Some(_), None) => false,
        };
        service_ok
            && self
                .tenants
                .as_ref()
                .is_none_or(|allowed| allowed.contains(tenant.unwrap_or_default()))
    }
}

/// The settings of a [`Plan`] that come from the schema, shared by every writer's plan.
pub struct SchemaPlan {
    version: String,
    index_prefix: String,
    leaf: bool,
    max_attributes: usize,
    max_resource_attributes: usize,
    max_key_bytes: usize,
    max_text_bytes: usize,
    max_body_bytes: usize,
    max_clock_skew_ns: i128,
    max_future_ns: i128,
    min_time_ns: i128,
    resource_required_categories: Vec<Vec<u8>>,
    ecs_category: Vec<(Vec<u8>, Vec<String>)>,
    ecs_outcome: Vec<(Vec<u8>, String)>,
    ecs_types: EcsTypes,
    fields: Vec<FieldPlan>,
    resource_fields: Vec<ResourceFieldPlan>,
    /// Indexes into `fields`, ordered by attribute: a record's sorted attributes are
    /// matched against them in one merge.
    by_attribute: Vec<usize>,
    resource_known: HashSet<Vec<u8>>,
    /// The attributes read by role.
    category: Vec<u8>,
    outcome: Vec<u8>,
    action: Vec<u8>,
    event_id: Vec<u8>,
    /// The attributes a category in `resource_required_categories` requires: the fields
    /// required for those categories.
    category_needs: Vec<Vec<u8>>,
    constants: Constants,
    /// The limits of the record's own strings, in UTF-8 bytes (Python cuts longer text).
    max_level_bytes: usize,
    max_event_name_bytes: usize,
    max_scope_name_bytes: usize,
    max_scope_version_bytes: usize,
    layout: Layout,
}

/// The literal values the document stores, from the plan's `constants` table.
struct Constants {
    kind: String,
    dataset: String,
    ecs_version: String,
    /// The ECS outcome of an outcome the mapping lacks.
    unmapped_outcome: String,
    /// `audit.event_id_source` of an id the emitter sent, and of one derived here.
    emitter: String,
    derived: String,
    no_event_time: String,
    no_trace: String,
    clock_skew: String,
}

impl Constants {
    fn new(constants: &Table<'_>) -> PyResult<Self> {
        Ok(Constants {
            kind: constants.text("kind")?,
            dataset: constants.text("dataset")?,
            ecs_version: constants.text("ecs_version")?,
            unmapped_outcome: constants.text("ecs_outcome.default")?,
            emitter: constants.text("event_id_source.emitter")?,
            derived: constants.text("event_id_source.derived")?,
            no_event_time: constants.text("flags.no_event_time")?,
            no_trace: constants.text("flags.no_trace")?,
            clock_skew: constants.text("flags.clock_skew")?,
        })
    }
}

/// One of the plan's tables by role; a role it lacks refuses the plan, naming the role.
struct Table<'py> {
    name: &'static str,
    dict: Bound<'py, PyDict>,
}

impl<'py> Table<'py> {
    fn new(settings: &Bound<'py, PyDict>, name: &'static str) -> PyResult<Self> {
        let dict = item(settings, name)?.cast_into::<PyDict>()?;
        Ok(Table { name, dict })
    }

    fn get(&self, role: &str) -> PyResult<Bound<'py, PyAny>> {
        self.dict.get_item(role)?.ok_or_else(|| {
            PyValueError::new_err(format!("plan setting {} has no role {role}", self.name))
        })
    }

    fn text(&self, role: &str) -> PyResult<String> {
        self.get(role)?.extract()
    }
}

/// Every path a document of this plan can hold a value at, in the order the document's
/// sorted keys put them: a path's rank is its index. A document is then a list of
/// (rank, value) written in rank order, with no tree to build, search or sort: the
/// objects on the way are opened and closed as consecutive paths part.
///
/// Two values at one path, or one at a path and another below it, is a collision, which
/// is left to Python: the paths below a path are the ranks right after it, up to
/// `subtree_end`.
///
/// The paths are the schema's fields' and those of the roles in [`ROLES`], from the plan's
/// `paths` table. The related entities and the resource's origin are written whole, as
/// Python writes them: one object at their parent path, with their last segments as keys.
struct Layout {
    paths: Vec<Vec<String>>,
    /// Each path's segments as JSON strings, ready to write as keys.
    keys: Vec<Vec<Vec<u8>>>,
    subtree_end: Vec<u16>,
    timestamp: u16,
    event_id: u16,
    event_kind: u16,
    event_category: u16,
    event_type: u16,
    ecs_version: u16,
    event_outcome: u16,
    event_dataset: u16,
    event_ingested: u16,
    event_created: u16,
    schema_version: u16,
    event_id_source: u16,
    content_hash: u16,
    related: u16,
    related_user: Vec<u8>,
    related_ip: Vec<u8>,
    extra: u16,
    origin: u16,
    origin_key: Vec<u8>,
    trace_id: u16,
    span_id: u16,
    trace_flags: u16,
    correlation_id: u16,
    client_ip: u16,
    log_level: u16,
    message: u16,
    event_name: u16,
    scope_name: u16,
    scope_version: u16,
    clock_skew_ms: u16,
    untrusted: u16,
    flags: u16,
}

/// The roles whose values the document holds at their own path.
const ROLES: [&str; 27] = [
    "timestamp",
    "event_id",
    "kind",
    "ecs_category",
    "ecs_type",
    "ecs_version",
    "ecs_outcome",
    "dataset",
    "ingested",
    "created",
    "schema_version",
    "event_id_source",
    "content_hash",
    "extra",
    "trace_id",
    "span_id",
    "trace_flags",
    "correlation_id",
    "client_ip",
    "log_level",
    "message",
    "event_name",
    "scope_name",
    "scope_version",
    "clock_skew_ms",
    "untrusted",
    "flags",
];

/// The object the values of `roles` are written in as one (below the root), and their
/// keys in it.
fn object_of<const N: usize>(
    paths: &Table<'_>,
    roles: [&str; N],
) -> PyResult<(Vec<String>, [Vec<u8>; N])> {
    let apart = || {
        let roles = roles.join(", ");
        PyValueError::new_err(format!("the roles {roles} are not in one object"))
    };
    let mut parents = Vec::with_capacity(N);
    let mut keys = Vec::with_capacity(N);
    for role in roles {
        let mut p = path(&paths.text(role)?)?;
        keys.push(p.pop().unwrap_or_default().into_bytes());
        parents.push(p);
    }
    let parent = parents.pop().filter(|p| !p.is_empty()).ok_or_else(apart)?;
    if parents.iter().any(|p| *p != parent) {
        return Err(apart());
    }
    Ok((parent, keys.try_into().map_err(|_| apart())?))
}

impl Layout {
    /// The layout of the roles' paths (`by_role`, the plan's `paths` table) and `more`
    /// (the schema's stored paths).
    fn new(by_role: &Table<'_>, more: &[&Vec<String>]) -> PyResult<Self> {
        let roles: HashMap<&str, Vec<String>> = ROLES
            .iter()
            .map(|&role| Ok((role, path(&by_role.text(role)?)?)))
            .collect::<PyResult<_>>()?;
        let (related, [related_user, related_ip]) =
            object_of(by_role, ["related_user", "related_ip"])?;
        let (origin, [origin_key]) = object_of(by_role, ["origin"])?;
        let mut paths: Vec<Vec<String>> = roles.values().cloned().collect();
        paths.push(related.clone());
        paths.push(origin.clone());
        paths.extend(more.iter().map(|p| (*p).clone()));
        paths.sort();
        paths.dedup();
        if paths.len() > usize::from(u16::MAX) {
            return Err(PyValueError::new_err("too many stored paths"));
        }
        let keys = paths
            .iter()
            .map(|p| {
                p.iter()
                    .map(|segment| {
                        let mut key = Vec::with_capacity(segment.len() + 2);
                        string(&mut key, segment.as_bytes());
                        key
                    })
                    .collect()
            })
            .collect();
        let mut subtree_end = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            let below = paths[i + 1..]
                .iter()
                .take_while(|q| q.starts_with(p))
                .count();
            subtree_end.push((i + below) as u16);
        }
        let find = |p: &[String]| -> PyResult<u16> {
            paths
                .binary_search_by(|q| q.as_slice().cmp(p))
                .map(|i| i as u16)
                .map_err(|_| PyValueError::new_err(format!("no rank for {}", p.join("."))))
        };
        // Every role in ROLES has its path in `paths`: a role missing there is a bug that
        // refuses the plan (Python then prepares everything) rather than a bad rank later.
        let rank_of = |role: &str| -> PyResult<u16> {
            let p = roles
                .get(role)
                .ok_or_else(|| PyValueError::new_err(format!("no rank for role {role}")))?;
            find(p)
        };
        Ok(Layout {
            timestamp: rank_of("timestamp")?,
            event_id: rank_of("event_id")?,
            event_kind: rank_of("kind")?,
            event_category: rank_of("ecs_category")?,
            event_type: rank_of("ecs_type")?,
            ecs_version: rank_of("ecs_version")?,
            event_outcome: rank_of("ecs_outcome")?,
            event_dataset: rank_of("dataset")?,
            event_ingested: rank_of("ingested")?,
            event_created: rank_of("created")?,
            schema_version: rank_of("schema_version")?,
            event_id_source: rank_of("event_id_source")?,
            content_hash: rank_of("content_hash")?,
            related: find(&related)?,
            related_user,
            related_ip,
            extra: rank_of("extra")?,
            origin: find(&origin)?,
            origin_key,
            trace_id: rank_of("trace_id")?,
            span_id: rank_of("span_id")?,
            trace_flags: rank_of("trace_flags")?,
            correlation_id: rank_of("correlation_id")?,
            client_ip: rank_of("client_ip")?,
            log_level: rank_of("log_level")?,
            message: rank_of("message")?,
            event_name: rank_of("event_name")?,
            scope_name: rank_of("scope_name")?,
            scope_version: rank_of("scope_version")?,
            clock_skew_ms: rank_of("clock_skew_ms")?,
            untrusted: rank_of("untrusted")?,
            flags: rank_of("flags")?,
            paths,
            keys,
            subtree_end,
        })
    }

    /// The rank of a path the layout was built with.
    fn rank(&self, p: &[String]) -> PyResult<u16> {
        self.paths
            .binary_search_by(|q| q.as_slice().cmp(p))
            .map(|i| i as u16)
            .map_err(|_| PyValueError::new_err(format!("no rank for {}", p.join("."))))
    }

    /// Whether `rank` or a path below it holds a value in `entries` (in any order).
    fn holds(&self, entries: &[(u16, Node<'_>)], rank: u16) -> bool {
        let end = self.subtree_end[usize::from(rank)];
        entries.iter().any(|&(r, _)| (rank..=end).contains(&r))
    }

    /// Write `entries` (in any order) as the document's JSON, in rank order; a collision
    /// is left to Python.
    fn write(&self, entries: &mut [(u16, Node<'_>)], out: &mut Vec<u8>) -> Built<()> {
        // Where each rank's value is in `entries`: a document holds a few dozen values
        // among a few dozen ranks, so placing them beats sorting them.
        const NONE: u16 = u16::MAX;
        let mut at = vec![NONE; self.paths.len()];
        for (i, &(rank, _)) in entries.iter().enumerate() {
            let slot = at.get_mut(usize::from(rank)).ok_or(Fallback)?;
            if *slot != NONE {
                return Err(Fallback);
            }
            *slot = i as u16;
        }
        let mut order = Vec::with_capacity(entries.len());
        let mut below_end: Option<u16> = None;
        for (rank, &i) in at.iter().enumerate() {
            if i == NONE {
                continue;
            }
            let rank = rank as u16;
            if below_end.is_some_and(|end| rank <= end) {
                return Err(Fallback);
            }
            below_end = Some(self.subtree_end[usize::from(rank)]);
            order.push(usize::from(i));
        }
        out.push(b'{');
        // The segments of the objects open below the root, and per open object (the root
        // first) whether it has no member yet.
        let mut open: Vec<&str> = Vec::with_capacity(4);
        let mut empty: Vec<bool> = Vec::with_capacity(5);
        empty.push(true);
        for i in order {
            let (rank, value) = &mut entries[i];
            let path = &self.paths[usize::from(*rank)];
            let keys = &self.keys[usize::from(*rank)];
            let parent = &path[..path.len() - 1];
            let shared = open
                .iter()
                .zip(parent)
                .take_while(|(a, b)| **a == b.as_str())
                .count();
            while open.len() > shared {
                open.pop();
                empty.pop();
                out.push(b'}');
            }
            for (depth, segment) in parent.iter().enumerate().skip(shared) {
                if !std::mem::replace(&mut empty[depth], false) {
                    out.push(b',');
                }
                out.extend_from_slice(&keys[depth]);
                out.extend_from_slice(b":{");
                open.push(segment);
                empty.push(true);
            }
            let depth = parent.len();
            if !std::mem::replace(&mut empty[depth], false) {
                out.push(b',');
            }
            out.extend_from_slice(&keys[depth]);
            out.push(b':');
            value.write(out);
        }
        for _ in open {
            out.push(b'}');
        }
        out.push(b'}');
        Ok(())
    }
}

fn item<'py>(settings: &Bound<'py, PyDict>, key: &str) -> PyResult<Bound<'py, PyAny>> {
    settings
        .get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("plan setting {key} is missing")))
}

fn text<'py>(settings: &Bound<'py, PyDict>, key: &str) -> PyResult<String> {
    item(settings, key)?.extract()
}

fn path(stored: &str) -> PyResult<Vec<String>> {
    let parts: Vec<String> = stored.split('.').map(str::to_owned).collect();
    if parts.iter().any(|p| p.is_empty() || !p.is_ascii()) {
        return Err(PyValueError::new_err(format!(
            "stored path {stored:?} is not plain"
        )));
    }
    Ok(parts)
}

fn pairs<T>(value: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, T)>>
where
    T: for<'a, 'py> FromPyObject<'a, 'py>,
{
    let dict = value.cast::<PyDict>()?;
    let mut out = Vec::new();
    for (k, v) in dict.iter() {
        out.push((
            k.extract::<String>()?.into_bytes(),
            v.extract::<T>().map_err(Into::into)?,
        ));
    }
    Ok(out)
}

#[pymethods]
impl Plan {
    #[new]
    fn new(settings: &Bound<'_, PyDict>, leaf: bool) -> PyResult<Self> {
        let int = |key: &str| -> PyResult<i128> { item(settings, key)?.extract() };
        let size = |key: &str| -> PyResult<usize> { item(settings, key)?.extract() };
        let paths = Table::new(settings, "paths")?;
        let attributes = Table::new(settings, "attributes")?;
        let attribute =
            |role: &str| -> PyResult<Vec<u8>> { Ok(attributes.text(role)?.into_bytes()) };
        let max_bytes = Table::new(settings, "max_bytes")?;
        let limit = |role: &str| -> PyResult<usize> { max_bytes.get(role)?.extract() };
        let mut fields = Vec::new();
        for f in item(settings, "fields")?.try_iter()? {
            let f = f?.cast_into::<PyDict>()?;
            let stored = text(&f, "stored")?;
            let required = match text(&f, "required")?.as_str() {
                "always" => Required::Always,
                "optional" => Required::Optional,
                "resource_categories" => Required::ResourceCategories,
                "derived" => Required::Derived,
                other => return Err(PyValueError::new_err(format!("required {other:?}"))),
            };
            let enum_values: Option<Vec<String>> = item(&f, "enum")?.extract()?;
            let pattern = item(&f, "pattern")?;
            let mut ip_copy = Vec::new();
            for copy in item(&f, "ip_copy")?.extract::<Vec<String>>()? {
                ip_copy.push(path(&copy)?);
            }
            let mut actor_copies = Vec::new();
            let copies: HashMap<String, Vec<(String, String)>> =
                item(&f, "actor_copies")?.extract()?;
            let mut kinds: Vec<_> = copies.into_iter().collect();
            kinds.sort();
            for (kind, pairs) in kinds {
                let mut to = Vec::new();
                for (attribute, stored) in pairs {
                    to.push((attribute.into_bytes(), path(&stored)?));
                }
                actor_copies.push((kind.into_bytes(), to));
            }
            let aliases: Vec<String> = item(&f, "aliases")?.extract()?;
            fields.push(FieldPlan {
                attribute: text(&f, "attribute")?.into_bytes(),
                path: path(&stored)?,
                stored,
                required,
                reject: item(&f, "reject")?.extract()?,
                truncate: item(&f, "truncate")?.extract()?,
                max_bytes: item(&f, "max_bytes")?.extract()?,
                enum_values: enum_values.map(|v| v.into_iter().map(String::into_bytes).collect()),
                pattern: if pattern.is_none() {
                    None
                } else {
                    let source: String = pattern.getattr("pattern")?.extract()?;
                    Some(match rust_pattern(&source) {
                        Some(regex) => Pattern::Rust(regex),
                        None => Pattern::Python(pattern.unbind()),
                    })
                },
                client_supplied: item(&f, "client_supplied")?.extract()?,
                ip_copy,
                rank: 0,
                ip_copy_ranks: Vec::new(),
                array: item(&f, "array")?.extract()?,
                aliases: aliases.into_iter().map(String::into_bytes).collect(),
                related_user: item(&f, "related_user")?.extract()?,
                actor_copies,
                copy_ranks: Vec::new(),
            });
        }
        let mut resource_fields = Vec::new();
        for rf in item(settings, "resource_fields")?.try_iter()? {
            let rf = rf?.cast_into::<PyDict>()?;
            let alias: Option<String> = item(&rf, "alias")?.extract()?;
            resource_fields.push(ResourceFieldPlan {
                attribute: text(&rf, "attribute")?.into_bytes(),
                alias: alias.map(String::into_bytes),
                path: path(&text(&rf, "stored")?)?,
                always: item(&rf, "always")?.extract()?,
                max_bytes: item(&rf, "max_bytes")?.extract()?,
                rank: 0,
            });
        }
        let stored: Vec<&Vec<String>> = fields
            .iter()
            .flat_map(|f| std::iter::once(&f.path).chain(&f.ip_copy))
            .chain(
                fields
                    .iter()
                    .flat_map(|f| &f.actor_copies)
                    .flat_map(|(_, to)| to.iter().map(|(_, p)| p)),
            )
            .chain(resource_fields.iter().map(|rf| &rf.path))
            .collect();
        let layout = Layout::new(&paths, &stored)?;
        for f in &mut fields {
            f.rank = layout.rank(&f.path)?;
            f.ip_copy_ranks = f
                .ip_copy
                .iter()
                .map(|c| layout.rank(c))
                .collect::<PyResult<_>>()?;
            f.copy_ranks = f
                .actor_copies
                .iter()
                .map(|(_, to)| to.iter().map(|(_, p)| layout.rank(p)).collect())
                .collect::<PyResult<_>>()?;
        }
        for rf in &mut resource_fields {
            rf.rank = layout.rank(&rf.path)?;
        }
        let categories: Vec<String> = item(settings, "resource_required_categories")?.extract()?;
        let category_needs = fields
            .iter()
            .filter(|f| f.required == Required::ResourceCategories)
            .map(|f| f.attribute.clone())
            .collect();
        let schema = SchemaPlan {
            version: text(settings, "version")?,
            index_prefix: text(settings, "index_prefix")?,
            leaf,
            max_attributes: size("max_attributes")?,
            max_resource_attributes: size("max_resource_attributes")?,
            max_key_bytes: size("max_attribute_key_bytes")?,
            max_text_bytes: size("max_text_bytes")?,
            max_body_bytes: size("max_body_bytes")?,
            max_clock_skew_ns: int("max_clock_skew_s")? * NS_PER_S,
            max_future_ns: int("max_future_s")? * NS_PER_S,
            min_time_ns: int("min_time_unix_nano")?,
            resource_required_categories: categories.into_iter().map(String::into_bytes).collect(),
            ecs_category: pairs(&item(settings, "ecs_category")?)?,
            ecs_outcome: pairs(&item(settings, "ecs_outcome")?)?,
            ecs_types: EcsTypes::new(&item(settings, "ecs_type")?)?,
            by_attribute: {
                let mut order: Vec<usize> = (0..fields.len()).collect();
                order.sort_by(|&a, &b| fields[a].attribute.cmp(&fields[b].attribute));
                order
            },
            resource_known: resource_fields
                .iter()
                .map(|f| f.attribute.clone())
                .collect(),
            fields,
            resource_fields,
            category: attribute("category")?,
            outcome: attribute("outcome")?,
            action: attribute("action")?,
            event_id: attribute("event_id")?,
            category_needs,
            constants: Constants::new(&Table::new(settings, "constants")?)?,
            max_level_bytes: limit("log_level")?,
            max_event_name_bytes: limit("event_name")?,
            max_scope_name_bytes: limit("scope_name")?,
            max_scope_version_bytes: limit("scope_version")?,
            layout,
        };
        Ok(Plan {
            schema: Arc::new(schema),
            writer: None,
        })
    }

    /// This plan for one writer: records outside its allowance are not prepared (Python
    /// refuses them with the reason), and the others' documents end with `member`
    /// (`,"writer":{...}`, sorted JSON), their leaf hashed over it. `services` / `tenants`
    /// None allow any; an empty tenant in `tenants` allows records without one.
    /// `service_attribute` and `tenant_attribute` name the resource field and the field
    /// the allowance reads.
    #[pyo3(signature = (member, services, tenants, service_attribute, tenant_attribute))]
    fn with_writer(
        &self,
        member: Vec<u8>,
        services: Option<Vec<Vec<u8>>>,
        tenants: Option<Vec<Vec<u8>>>,
        service_attribute: &str,
        tenant_attribute: &str,
    ) -> PyResult<Plan> {
        let service_rank = self
            .resource_fields
            .iter()
            .find(|rf| rf.attribute == service_attribute.as_bytes())
            .map(|rf| rf.rank)
            .ok_or_else(|| {
                PyValueError::new_err(format!("no resource field {service_attribute}"))
            })?;
        let tenant_field = self
            .fields
            .iter()
            .position(|f| f.attribute == tenant_attribute.as_bytes())
            .ok_or_else(|| PyValueError::new_err(format!("no field {tenant_attribute}")))?;
        if !member.is_empty() && (member[0] != b',' || member.last() != Some(&b'}')) {
            return Err(PyValueError::new_err(
                "the writer member must be ',\"name\":{...}'",
            ));
        }
        Ok(Plan {
            schema: Arc::clone(&self.schema),
            writer: Some(WriterRule {
                member,
                services: services.map(|v| v.into_iter().collect()),
                tenants: tenants.map(|v| v.into_iter().collect()),
                service_rank,
                tenant_field,
            }),
        })
    }

    /// Whether this plan hashes leaves.
    #[getter]
    fn leaf(&self) -> bool {
        self.leaf
    }
}

/// An object's members.
type Members<'a> = Vec<(&'a [u8], Node<'a>)>;

/// A JSON value of the document; object keys sort by their bytes, as orjson's do.
#[derive(Clone)]
enum Node<'a> {
    Str(&'a [u8]),
    Owned(String),
    Int(i64),
    Bool(bool),
    Null,
    List(Vec<Node<'a>>),
    /// Keys in any order, each once: sorted when written. A document's objects hold a
    /// dozen keys at most, for which a vector beats a tree.
    Obj(Members<'a>),
}

/// The record is left to Python.
struct Fallback;

type Built<T> = Result<T, Fallback>;

impl<'a> Node<'a> {
    /// Serialize as orjson does with sorted keys (sorting the objects in place).
    fn write(&mut self, out: &mut Vec<u8>) {
        match self {
            Node::Str(s) => string(out, s),
            Node::Owned(s) => string(out, s.as_bytes()),
            Node::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Null => out.extend_from_slice(b"null"),
            Node::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter_mut().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Node::Obj(map) => {
                map.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (key, value)) in map.iter_mut().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    string(out, key);
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

/// Attributes sorted by key, each with its value (`None` for an unset one, Python's None).
type Attrs<'a> = Vec<(&'a [u8], Option<&'a Value>)>;

/// The attributes as the record's dict would hold them; a repeated key is left to Python.
fn sorted_attrs(kvs: &[Lenient<KeyValue>]) -> Built<Attrs<'_>> {
    let mut attrs: Attrs<'_> = kvs
        .iter()
        .map(|kv| {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            (&kv.key[..], value)
        })
        .collect();
    attrs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    if attrs.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Fallback);
    }
    Ok(attrs)
}

/// `Some(value)` for a present key (its value possibly None), `None` when absent.
fn lookup<'a>(attrs: &Attrs<'a>, key: &[u8]) -> Option<Option<&'a Value>> {
    attrs
        .binary_search_by(|(k, _)| (*k).cmp(key))
        .ok()
        .map(|i| attrs[i].1)
}

/// A record's attributes matched against the plan's fields in one merge of two sorted
/// lists, instead of a search per field.
struct Matched<'a> {
    /// Per field of the plan: `Some(value)` when its attribute is present (the value
    /// possibly None), `None` when absent.
    fields: Vec<Option<Option<&'a Value>>>,
    /// The attributes no field names, sorted.
    unknown: Attrs<'a>,
}

fn match_fields<'a>(plan: &Plan, attrs: &Attrs<'a>) -> Matched<'a> {
    let mut fields = vec![None; plan.fields.len()];
    let mut unknown = Vec::new();
    let order = &plan.by_attribute;
    let mut j = 0;
    for &(key, value) in attrs {
        while j < order.len() && plan.fields[order[j]].attribute[..] < *key {
            j += 1;
        }
        let mut k = j;
        while k < order.len() && plan.fields[order[k]].attribute[..] == *key {
            fields[order[k]] = Some(value);
            k += 1;
        }
        if k == j {
            unknown.push((key, value));
        }
    }
    Matched { fields, unknown }
}

fn as_str(found: Option<Option<&Value>>) -> Option<&[u8]> {
    match found {
        Some(Some(Value::StringValue(s))) => Some(&s[..]),
        _ => None,
    }
}

fn present_str<'a>(attrs: &Attrs<'a>, key: &[u8]) -> Option<&'a [u8]> {
    match lookup(attrs, key) {
        Some(Some(Value::StringValue(s))) => Some(&s[..]),
        _ => None,
    }
}

fn printable_ascii(s: &[u8]) -> bool {
    s.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// `validate._plain_key`.
fn plain_key(key: &[u8], max_bytes: usize) -> bool {
    !key.is_empty()
        && key.len() <= max_bytes
        && printable_ascii(key)
        && key[0] != b'.'
        && key[key.len() - 1] != b'.'
        && !key.windows(2).any(|w| w == b"..")
}

/// An attribute the schema does not name, as `document._free_values` stores it when the
/// validator's fast path accepts it and the result is plain.
fn free_value<'a>(value: Option<&'a Value>, max_text_bytes: usize) -> Built<Node<'a>> {
    Ok(match value {
        None => Node::Null,
        Some(Value::StringValue(s)) if s.is_ascii() && s.len() <= max_text_bytes => Node::Str(s),
        Some(Value::BoolValue(b)) => Node::Bool(*b),
        Some(Value::IntValue(i)) if (-MAX_SAFE_INT..=MAX_SAFE_INT).contains(i) => Node::Int(*i),
        Some(Value::IntValue(i)) => Node::Owned(i.to_string()),
        Some(Value::BytesValue(b)) => Node::Owned(STANDARD.encode(b)),
        Some(_) => return Err(Fallback),
    })
}

/// The attributes no schema field names (`unknown`, sorted) as stored values.
fn extras<'a>(unknown: &[(&'a [u8], Option<&'a Value>)], plan: &Plan) -> Built<Members<'a>> {
    let mut out = Vec::with_capacity(unknown.len());
    for &(key, value) in unknown {
        if !plain_key(key, plan.max_key_bytes) {
            return Err(Fallback);
        }
        out.push((key, free_value(value, plan.max_text_bytes)?));
    }
    Ok(out)
}

/// What every record of one ResourceLogs shares.
pub struct ResourcePart<'a> {
    /// (rank, value) of the resource's stored fields.
    placed: Vec<(u16, &'a [u8])>,
    origin: Members<'a>,
}

/// The resource's share of the document, when the validator's fast path accepts it.
pub fn resource_part<'a>(plan: &'a Plan, kvs: &'a [Lenient<KeyValue>]) -> Option<ResourcePart<'a>> {
    resource_part_built(plan, kvs).ok()
}

fn resource_part_built<'a>(
    plan: &'a Plan,
    kvs: &'a [Lenient<KeyValue>],
) -> Built<ResourcePart<'a>> {
    let attrs = sorted_attrs(kvs)?;
    if attrs.len() > plan.max_resource_attributes {
        return Err(Fallback);
    }
    let mut placed = Vec::new();
    for rf in &plan.resource_fields {
        match lookup(&attrs, &rf.attribute) {
            None if rf.always => return Err(Fallback),
            None => {}
            Some(Some(Value::StringValue(s))) => {
                let fits = usize::try_from(rf.max_bytes).is_ok_and(|max| s.len() <= max);
                let blank = s.iter().all(|&b| b == b' ');
                if !printable_ascii(s) || !fits || (rf.always && blank) {
                    return Err(Fallback);
                }
            }
            Some(_) => return Err(Fallback),
        }
        let value = match (lookup(&attrs, &rf.attribute), &rf.alias) {
            (None | Some(None), Some(alias)) => lookup(&attrs, alias).flatten(),
            (found, _) => found.flatten(),
        };
        if let Some(Value::StringValue(s)) = value {
            if !s.is_empty() {
                placed.push((rf.rank, &s[..]));
            }
        }
    }
    let unknown: Attrs<'a> = attrs
        .iter()
        .filter(|(key, _)| !plan.resource_known.contains(*key))
        .copied()
        .collect();
    let origin = extras(&unknown, plan)?;
    Ok(ResourcePart { placed, origin })
}

/// The scope and trace context of a record, as the decoder has them.
pub struct Context<'a> {
    pub scope_name: &'a [u8],
    pub scope_version: &'a [u8],
    pub trace_id: &'a str,
    pub span_id: &'a str,
    pub content_hash: Option<&'a str>,
    pub received_ns: i64,
    /// `received_ns` formatted, once per request.
    pub ingested: &'a str,
}

/// The record's `Prepared` tuple (see `receiver/ingest/prepare.py`), or None for Python to do.
pub fn prepare<'py>(
    py: Python<'py>,
    plan: &Plan,
    resource: &ResourcePart<'_>,
    lr: &LogRecord,
    ctx: &Context<'_>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Ok(attrs) = sorted_attrs(&lr.attributes) else {
        return Ok(None);
    };
    let matched = match_fields(plan, &attrs);
    if !valid_fields(py, plan, &attrs, &matched)? {
        return Ok(None);
    }
    if let Some(rule) = &plan.writer {
        let service = resource
            .placed
            .iter()
            .find(|(rank, _)| *rank == rule.service_rank)
            .map(|(_, value)| *value);
        if !rule.allows(service, as_str(matched.fields[rule.tenant_field])) {
            return Ok(None);
        }
    }
    let Ok(prepared) = build(plan, resource, lr, ctx, &attrs, &matched) else {
        return Ok(None);
    };
    let Prepared {
        index,
        event_id,
        encoded,
        source_at,
        leaf,
        timestamp,
    } = prepared;
    let leaf = match leaf {
        Some(hash) => PyBytes::new(py, &hash).into_any(),
        None => py.None().into_bound(py),
    };
    let fields: [Bound<'py, PyAny>; 7] = [
        PyString::new(py, &index).into_any(),
        PyString::new(py, &event_id).into_any(),
        PyBytes::new(py, &encoded).into_any(),
        source_at.into_pyobject(py)?.into_any(),
        PyString::new(py, ctx.content_hash.unwrap_or_default()).into_any(),
        leaf,
        PyString::new(py, &timestamp).into_any(),
    ];
    Ok(Some(PyTuple::new(py, fields)?))
}

/// `validate._plain_valid`'s checks of the attributes, with every value of a schema field
/// also required to be printable ASCII.
fn valid_fields(
    py: Python<'_>,
    plan: &Plan,
    attrs: &Attrs<'_>,
    matched: &Matched<'_>,
) -> PyResult<bool> {
    if attrs.len() > plan.max_attributes {
        return Ok(false);
    }
    for (f, &found) in plan.fields.iter().zip(&matched.fields) {
        if f.array && found.is_some() {
            return Ok(false);
        }
        let s = match found {
            None if f.required == Required::Always => return Ok(false),
            // An alias standing in for the field (or an array one) is Python's to judge.
            None if f.aliases.iter().any(|a| lookup(attrs, a).is_some()) => return Ok(false),
            None => continue,
            Some(Some(Value::StringValue(s))) => s,
            Some(_) => return Ok(false),
        };
        if let Some(values) = &f.enum_values {
            if !values.iter().any(|v| v[..] == s[..]) {
                return Ok(false);
            }
            continue;
        }
        if s.is_empty() || !printable_ascii(s) || s.iter().all(|&b| b == b' ') {
            return Ok(false);
        }
        if f.reject && usize::try_from(f.max_bytes).is_ok_and(|max| s.len() > max) {
            return Ok(false);
        }
        let matched = match &f.pattern {
            None => true,
            Some(Pattern::Rust(regex)) => regex.is_match(s),
            Some(Pattern::Python(pattern)) => {
                // Printable ASCII, checked above, is valid UTF-8.
                let value = PyString::new(py, std::str::from_utf8(s).unwrap_or_default());
                !pattern
                    .bind(py)
                    .call_method1("fullmatch", (value,))?
                    .is_none()
            }
        };
        if !matched {
            return Ok(false);
        }
    }
    let category = present_str(attrs, &plan.category).unwrap_or_default();
    if plan
        .resource_required_categories
        .iter()
        .any(|c| c[..] == *category)
        && plan
            .category_needs
            .iter()
            .any(|name| lookup(attrs, name).is_none())
    {
        return Ok(false);
    }
    Ok(true)
}

struct Prepared {
    index: String,
    event_id: String,
    encoded: Vec<u8>,
    source_at: usize,
    leaf: Option<[u8; 32]>,
    timestamp: String,
}

/// The UTF-8 text `s` when it is within `limit` bytes (Python cuts longer text).
fn fits(s: &[u8], limit: usize) -> Built<&[u8]> {
    if s.len() <= limit {
        Ok(s)
    } else {
        Err(Fallback)
    }
}

fn build<'a>(
    plan: &'a Plan,
    resource: &ResourcePart<'a>,
    lr: &'a LogRecord,
    ctx: &Context<'a>,
    attrs: &Attrs<'a>,
    matched: &Matched<'a>,
) -> Built<Prepared> {
    let content_hash = ctx.content_hash.ok_or(Fallback)?;
    let received = i128::from(ctx.received_ns);
    let constants = &plan.constants;
    let mut flags: Vec<&'a str> = Vec::new();
    let ts = if lr.time_unix_nano != 0 {
        lr.time_unix_nano
    } else {
        flags.push(&constants.no_event_time);
        lr.observed_time_unix_nano
    };
    let ts_wide = i128::from(ts);
    if ts_wide < plan.min_time_ns || ts_wide > received + plan.max_future_ns {
        return Err(Fallback);
    }
    let extra = extras(&matched.unknown, plan)?;

    let (event_id, id_source) = match present_str(attrs, &plan.event_id) {
        Some(id) if !id.is_empty() => (
            String::from_utf8_lossy(id).to_ascii_lowercase(),
            &constants.emitter,
        ),
        _ => (
            derive_event_id(content_hash).ok_or(Fallback)?,
            &constants.derived,
        ),
    };
    let category = present_str(attrs, &plan.category).ok_or(Fallback)?;
    let outcome = present_str(attrs, &plan.outcome).ok_or(Fallback)?;
    let action = present_str(attrs, &plan.action).ok_or(Fallback)?;
    let timestamp = format_ns(ts_wide);

    let lay = &plan.layout;
    let mut doc: Vec<(u16, Node<'a>)> = Vec::with_capacity(48);
    doc.push((lay.timestamp, Node::Owned(timestamp.clone())));
    doc.push((lay.event_id, Node::Owned(event_id.clone())));
    doc.push((lay.event_kind, Node::Str(constants.kind.as_bytes())));
    let ecs_category = plan
        .ecs_category
        .iter()
        .find(|(c, _)| c[..] == *category)
        .map(|(_, v)| v.iter().map(|s| Node::Str(s.as_bytes())).collect())
        .unwrap_or_default();
    doc.push((lay.event_category, Node::List(ecs_category)));
    let ecs_types = plan.ecs_types.types(category, action, outcome);
    let ecs_types = ecs_types.into_iter().map(|t| Node::Str(t.as_bytes()));
    doc.push((lay.event_type, Node::List(ecs_types.collect())));
    doc.push((lay.ecs_version, Node::Str(constants.ecs_version.as_bytes())));
    let ecs_outcome = plan
        .ecs_outcome
        .iter()
        .find(|(o, _)| o[..] == *outcome)
        .map_or(constants.unmapped_outcome.as_bytes(), |(_, v)| v.as_bytes());
    doc.push((lay.event_outcome, Node::Str(ecs_outcome)));
    doc.push((lay.event_dataset, Node::Str(constants.dataset.as_bytes())));
    doc.push((lay.event_ingested, Node::Str(ctx.ingested.as_bytes())));
    if lr.observed_time_unix_nano != 0 {
        let created = format_ns(i128::from(lr.observed_time_unix_nano));
        doc.push((lay.event_created, Node::Owned(created)));
    }
    doc.push((lay.schema_version, Node::Str(plan.version.as_bytes())));
    doc.push((lay.event_id_source, Node::Str(id_source.as_bytes())));
    doc.push((lay.content_hash, Node::Str(content_hash.as_bytes())));

    let mut untrusted = Vec::new();
    let mut users: Vec<&[u8]> = Vec::with_capacity(4);
    for (f, &found) in plan.fields.iter().zip(&matched.fields) {
        if f.attribute == plan.event_id {
            continue;
        }
        let Some(value) = as_str(found).filter(|s| !s.is_empty()) else {
            continue;
        };
        if f.related_user {
            users.push(value);
        }
        // The stored values of other fields are copied where ECS looks for this kind of
        // actor (the values are never cut here, so stored and sent are the same).
        for ((kind, to), ranks) in f.actor_copies.iter().zip(&f.copy_ranks) {
            if kind[..] != *value {
                continue;
            }
            for ((attribute, _), &rank) in to.iter().zip(ranks) {
                if let Some(copied) = present_str(attrs, attribute).filter(|s| !s.is_empty()) {
                    doc.push((rank, Node::Str(copied)));
                }
            }
        }
        if f.truncate && f.max_bytes != 0 {
            fits(value, usize::try_from(f.max_bytes).map_err(|_| Fallback)?)?;
        }
        doc.push((f.rank, Node::Str(value)));
        if f.client_supplied {
            untrusted.push(Node::Str(f.stored.as_bytes()));
        }
        if !f.ip_copy.is_empty() {
            if let Some(ip) = as_ipv4(value)? {
                for &rank in &f.ip_copy_ranks {
                    doc.push((rank, Node::Owned(ip.clone())));
                }
            }
        }
    }

    users.sort_unstable();
    users.dedup();
    let mut related = Vec::with_capacity(2);
    related.push((
        &lay.related_user[..],
        Node::List(users.into_iter().map(Node::Str).collect()),
    ));
    // The client IP as the fields left it; an object there is left to Python.
    if lay.holds(&doc, lay.client_ip) {
        let (_, ip) = doc
            .iter()
            .find(|(r, _)| *r == lay.client_ip)
            .ok_or(Fallback)?;
        related.push((&lay.related_ip[..], Node::List(vec![ip.clone()])));
    }
    doc.push((lay.related, Node::Obj(related)));

    if !extra.is_empty() {
        doc.push((lay.extra, Node::Obj(extra)));
    }
    for &(rank, value) in &resource.placed {
        doc.push((rank, Node::Str(value)));
    }
    if !resource.origin.is_empty() {
        let origin = vec![(&lay.origin_key[..], Node::Obj(resource.origin.clone()))];
        doc.push((lay.origin, Node::Obj(origin)));
    }

    if ctx.trace_id.is_empty() {
        flags.push(&constants.no_trace);
    } else {
        doc.push((lay.trace_id, Node::Str(ctx.trace_id.as_bytes())));
        if !ctx.span_id.is_empty() {
            doc.push((lay.span_id, Node::Str(ctx.span_id.as_bytes())));
        }
        if lr.flags != 0 {
            doc.push((lay.trace_flags, Node::Int(i64::from(lr.flags & 0xFF))));
        }
        if !lay.holds(&doc, lay.correlation_id) {
            doc.push((lay.correlation_id, Node::Str(ctx.trace_id.as_bytes())));
        }
    }
    if !lr.severity_text.is_empty() {
        let level = fits(&lr.severity_text, plan.max_level_bytes)?;
        doc.push((lay.log_level, Node::Str(level)));
    }
    match lr.body.as_ref().and_then(|b| b.value.as_ref()) {
        None => {}
        Some(Value::StringValue(s)) if s.is_ascii() && s.is_empty() => {}
        Some(Value::StringValue(s)) if s.is_ascii() => {
            doc.push((lay.message, Node::Str(fits(s, plan.max_body_bytes)?)));
        }
        Some(_) => return Err(Fallback),
    }
    if !lr.event_name.is_empty() {
        let name = fits(&lr.event_name, plan.max_event_name_bytes)?;
        doc.push((lay.event_name, Node::Str(name)));
    }
    if !ctx.scope_name.is_empty() || !ctx.scope_version.is_empty() {
        let name = fits(ctx.scope_name, plan.max_scope_name_bytes)?;
        doc.push((lay.scope_name, Node::Str(name)));
        let version = fits(ctx.scope_version, plan.max_scope_version_bytes)?;
        doc.push((lay.scope_version, Node::Str(version)));
    }
    let skew = received - ts_wide;
    if skew.abs() > plan.max_clock_skew_ns {
        flags.push(&constants.clock_skew);
        let ms = i64::try_from(skew.div_euclid(1_000_000)).map_err(|_| Fallback)?;
        doc.push((lay.clock_skew_ms, Node::Int(ms)));
    }
    if !untrusted.is_empty() {
        doc.push((lay.untrusted, Node::List(untrusted)));
    }
    if !flags.is_empty() {
        let flags = flags.into_iter().map(|f| Node::Str(f.as_bytes())).collect();
        doc.push((lay.flags, Node::List(flags)));
    }

    let index = format!("{}{}", plan.index_prefix, day_suffix(ts_wide));
    let mut encoded = Vec::with_capacity(2048);
    encoded.extend_from_slice(b"{\"create\":{\"_index\":");
    string(&mut encoded, index.as_bytes());
    encoded.extend_from_slice(b",\"_id\":");
    string(&mut encoded, event_id.as_bytes());
    encoded.extend_from_slice(b"}}\n");
    let source_at = encoded.len();
    lay.write(&mut doc, &mut encoded)?;
    if let Some(rule) = plan.writer.as_ref().filter(|r| !r.member.is_empty()) {
        // The writer's member sorts after every field the schema writes: the last one.
        if encoded.pop() != Some(b'}') {
            return Err(Fallback);
        }
        encoded.extend_from_slice(&rule.member);
        encoded.push(b'}');
    }
    let leaf = plan.leaf.then(|| {
        let mut hasher = Sha256::new();
        hasher.update([0u8]);
        hasher.update(&encoded[source_at..]);
        hasher.finalize().into()
    });
    encoded.push(b'\n');
    Ok(Prepared {
        index,
        event_id,
        encoded,
        source_at,
        leaf,
        timestamp,
    })
}

/// `document._as_ip` for what it is certain of: an IPv4 address (brackets stripped, as
/// Python strips them) or no address at all. Anything with a colon may be IPv6, whose
/// text forms Python and Rust write differently: left to Python.
fn as_ipv4(value: &[u8]) -> Built<Option<String>> {
    let text = std::str::from_utf8(value).map_err(|_| Fallback)?;
    let bare = text.trim_matches(|c| c == '[' || c == ']');
    if bare.contains(':') {
        return Err(Fallback);
    }
    Ok(Ipv4Addr::from_str(bare).ok().map(|ip| ip.to_string()))
}

/// `document.derive_event_id`: a version 8 UUID from the content hash.
fn derive_event_id(content_hash: &str) -> Option<String> {
    let hex = content_hash.as_bytes();
    if hex.len() < 32 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, byte) in raw.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2]).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    raw[6] = (raw[6] & 0x0F) | 0x80;
    raw[8] = (raw[8] & 0x3F) | 0x80;
    let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `value` (not negative) in decimal, zero-padded to `width` digits.
fn push_digits(out: &mut String, value: i64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut v = value.unsigned_abs();
    let mut i = digits.len();
    while v > 0 || digits.len() - i < width {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Whole seconds and the nanoseconds past them of a time in nanoseconds; the seconds of
/// any 64-bit nanosecond count fit an i64, so the calendar works in 64-bit arithmetic.
fn split_ns(ns: i128) -> (i64, i64) {
    let secs = i64::try_from(ns.div_euclid(NS_PER_S)).unwrap_or(i64::MAX);
    let frac = i64::try_from(ns.rem_euclid(NS_PER_S)).unwrap_or(0);
    (secs, frac)
}

/// `document.format_ns`: RFC 3339 UTC with nanoseconds (`ns` is never negative here).
pub fn format_ns(ns: i128) -> String {
    let (secs, frac) = split_ns(ns);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let mut out = String::with_capacity(30);
    for (value, width, sep) in [
        (year, 4, '-'),
        (month, 2, '-'),
        (day, 2, 'T'),
        (rem / 3600, 2, ':'),
        (rem % 3600 / 60, 2, ':'),
        (rem % 60, 2, '.'),
        (frac, 9, 'Z'),
    ] {
        push_digits(&mut out, value, width);
        out.push(sep);
    }
    out
}

/// `document.event_index`'s date suffix.
fn day_suffix(ns: i128) -> String {
    let (year, month, day) = civil_from_days(split_ns(ns).0.div_euclid(86_400));
    let mut out = String::with_capacity(10);
    push_digits(&mut out, year, 4);
    out.push('.');
    push_digits(&mut out, month, 2);
    out.push('.');
    push_digits(&mut out, day, 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(format_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_ns(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            format_ns(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
        assert_eq!(day_suffix(1_795_000_000_123_456_789), "2026.11.18");
        assert_eq!(
            format_ns(i128::from(u64::MAX)),
            "2554-07-21T23:34:33.709551615Z"
        );
    }

    #[test]
    fn derived_ids_are_version_8() {
        let id = derive_event_id(&"ff".repeat(32)).unwrap_or_default();
        assert_eq!(id, "ffffffff-ffff-8fff-bfff-ffffffffffff");
    }

    #[test]
    fn only_plain_pattern_syntax_is_compiled_here() {
        let action = rust_pattern(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$");
        assert!(action
            .as_ref()
            .is_some_and(|r| r.is_match(b"invoice.update")));
        assert!(action.as_ref().is_some_and(|r| !r.is_match(b"invoice")));
        assert!(action.is_some_and(|r| !r.is_match(b"a.b ")));
        assert!(rust_pattern(r"^\d{3}$").is_some_and(|r| r.is_match(b"123")));
        assert!(rust_pattern(r"(?i)abc").is_none());
        assert!(rust_pattern(r"(a)\1").is_none());
        assert!(rust_pattern(r"\Aabc\Z").is_none());
    }

    #[test]
    fn only_ipv4_is_decided_here() {
        assert_eq!(
            as_ipv4(b"[10.0.0.1]").ok().flatten().as_deref(),
            Some("10.0.0.1")
        );
        assert!(matches!(as_ipv4(b"01.2.3.4"), Ok(None)));
        assert!(matches!(as_ipv4(b"host.example"), Ok(None)));
        assert!(as_ipv4(b"::1").is_err());
    }
}
