//! `otel_audit_native`: the otel-audit receiver's OTLP logs decoder.
//!
//! `decode_logs(body, record_factory)` parses a serialized `ExportLogsServiceRequest` with
//! prost and builds the same records, rejected records and reasons as the pure-Python
//! decoder in `receiver/otlp/decode.py`, whose semantics are the contract: see that module.
//! Only the Python objects the receiver keeps are created, none per protobuf message.
//! Each record also carries its content hash (see [`content_hash`]), computed from the
//! parsed message, so the receiver need not serialize the record again to hash it.

mod archive;
mod content_hash;
mod otlp;
mod prepare;
mod seal;

use std::collections::HashMap;

use prost::bytes::Bytes;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};

use crate::otlp::{AnyValue, ExportLogsServiceRequest, KeyValue, Lenient, Value};
use crate::prepare::Plan;

create_exception!(
    otel_audit_native,
    DecodeError,
    PyValueError,
    "The body is not a serialized ExportLogsServiceRequest."
);

/// Bodies at least this large are parsed with the GIL released, so a big request does not
/// stall the process's other threads; below it the release costs more than it frees.
const DETACH_BYTES: usize = 1 << 20;

/// Distinct attribute keys one request shares as one string object each; past this many
/// (only a hostile or unusual request has them) further keys get a string of their own.
const MAX_SHARED_KEYS: usize = 1024;

/// Decode a serialized `ExportLogsServiceRequest` into `(records, rejected, reasons)`.
///
/// Each record is `record_factory(*fields)` with the fields in the order of
/// `receiver.otlp.decode._RECORD_FIELDS`: the next to last is the record's content hash (hex),
/// or `None` when the record holds a value that only Python hashes (a double); the last
/// is, with a `plan`, the record's prepared write (see [`prepare`]) or `None`. A record
/// whose trace id is not 0 or 16 bytes, or whose span id is not 0 or 8 bytes, goes to
/// `rejected`, with its reason at the same index of `reasons`. `received_ns` is the
/// receive time the prepared documents record. With a `prepared_factory`, a prepared
/// record is `prepared_factory(prepared, position)` instead, `position` being its index in
/// `records` (the same index a decode without a plan gives it), and none of its fields
/// is built. Raises `DecodeError` when the body is not
/// a valid message.
#[pyfunction]
#[pyo3(signature = (body, record_factory, plan=None, received_ns=0, prepared_factory=None))]
fn decode_logs<'py>(
    py: Python<'py>,
    body: &[u8],
    record_factory: &Bound<'py, PyAny>,
    plan: Option<&Bound<'py, Plan>>,
    received_ns: i64,
    prepared_factory: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>)> {
    let plan = plan.map(Bound::get);
    let ingested = prepare::format_ns(i128::from(received_ns));
    // Parsed from one Bytes copy of the body, so every string and bytes field is a slice
    // of it rather than an allocation of its own.
    let parse = || otlp::decode::<ExportLogsServiceRequest>(Bytes::copy_from_slice(body));
    let request = if body.len() >= DETACH_BYTES {
        py.detach(parse)
    } else {
        parse()
    }
    .map_err(|err| DecodeError::new_err(err.to_string()))?;

    let mut objects = Objects {
        py,
        keys: HashMap::new(),
        by_position: Vec::new(),
    };
    let records = PyList::empty(py);
    let rejected = PyList::empty(py);
    let reasons = PyList::empty(py);
    let mut scratch = Vec::new();
    for rl in &request.resource_logs {
        // One dict per ResourceLogs, shared by its records (consumers treat it as read-only).
        let resource = match &rl.resource {
            Some(resource) => objects.attributes(&resource.attributes)?,
            None => PyDict::new(py),
        };
        let resource_json = match &rl.resource {
            Some(resource) => content_hash::attributes(&resource.attributes),
            None => Ok(b"{}".to_vec()),
        };
        let no_attributes = Vec::new();
        let resource_part = plan.and_then(|plan| {
            let kvs = rl
                .resource
                .as_ref()
                .map_or(&no_attributes, |r| &r.attributes);
            prepare::resource_part(plan, kvs)
        });
        for sl in &rl.scope_logs {
            let (scope_name, scope_version) = match &sl.scope {
                Some(scope) => (objects.text(&scope.name)?, objects.text(&scope.version)?),
                None => (objects.text(b"")?, objects.text(b"")?),
            };
            let shared = content_hash::Shared {
                resource: &resource_json,
                scope_name: sl.scope.as_ref().map_or(&[], |scope| &scope.name[..]),
                scope_version: sl.scope.as_ref().map_or(&[], |scope| &scope.version[..]),
            };
            for lr in &sl.log_records {
                let (trace_id, trace_ok) = hex_id(&lr.trace_id, 16);
                let (span_id, span_ok) = hex_id(&lr.span_id, 8);
                let hash =
                    content_hash::record_hash(&mut scratch, lr, &shared, &trace_id, &span_id).ok();
                let prepared = match (plan, &resource_part) {
                    (Some(plan), Some(part)) if trace_ok && span_ok => {
                        let ctx = prepare::Context {
                            scope_name: shared.scope_name,
                            scope_version: shared.scope_version,
                            trace_id: &trace_id,
                            span_id: &span_id,
                            content_hash: hash.as_deref(),
                            received_ns,
                            ingested: &ingested,
                        };
                        prepare::prepare(py, plan, part, lr, &ctx)?
                    }
                    _ => None,
                };
                let prepared = match (prepared, prepared_factory) {
                    (Some(prepared), Some(factory)) => {
                        // Only its write is needed: no Python values for its fields.
                        records.append(factory.call1((prepared, records.len()))?)?;
                        continue;
                    }
                    (prepared, _) => prepared,
                };
                let body = match &lr.body {
                    Some(value) => objects.any_value(value)?,
                    None => py.None().into_bound(py),
                };
                let fields: [Bound<'py, PyAny>; 16] = [
                    objects.record_attributes(&lr.attributes)?.into_any(),
                    resource.clone().into_any(),
                    lr.time_unix_nano.into_pyobject(py)?.into_any(),
                    lr.observed_time_unix_nano.into_pyobject(py)?.into_any(),
                    lr.severity_number.into_pyobject(py)?.into_any(),
                    objects.text(&lr.severity_text)?.into_any(),
                    body,
                    objects.text(trace_id.as_bytes())?.into_any(),
                    objects.text(span_id.as_bytes())?.into_any(),
                    lr.flags.into_pyobject(py)?.into_any(),
                    objects.text(&lr.event_name)?.into_any(),
                    scope_name.clone().into_any(),
                    scope_version.clone().into_any(),
                    lr.dropped_attributes_count.into_pyobject(py)?.into_any(),
                    hash.map_or_else(
                        || py.None().into_bound(py),
                        |hash| PyString::new(py, &hash).into_any(),
                    ),
                    prepared.map_or_else(|| py.None().into_bound(py), Bound::into_any),
                ];
                let record = record_factory.call1(PyTuple::new(py, fields)?)?;
                if trace_ok && span_ok {
                    records.append(record)?;
                } else {
                    rejected.append(record)?;
                    reasons.append(if trace_ok {
                        format!("span_id must be 8 bytes, got {}", lr.span_id.len())
                    } else {
                        format!("trace_id must be 16 bytes, got {}", lr.trace_id.len())
                    })?;
                }
            }
        }
    }
    Ok((records, rejected, reasons))
}

/// Builds the Python values of one request.
struct Objects<'py> {
    py: Python<'py>,
    /// Attribute keys seen so far: the same few keys repeat on every record, and one string
    /// per key (its hash computed once) is cheaper than one per occurrence. Not interned:
    /// from Python 3.12 an interned string is never freed, and keys come from the client.
    keys: HashMap<Bytes, Bound<'py, PyString>>,
    /// The keys of the previous record's attributes, by position: the records of a batch
    /// mostly list the same keys in the same order, and comparing with the key at the same
    /// position costs less than hashing.
    by_position: Vec<(Bytes, Bound<'py, PyString>)>,
}

impl<'py> Objects<'py> {
    /// A string field's value (UTF-8 was checked while parsing; checked again here, by
    /// Python, at no extra cost).
    fn text(&self, text: &[u8]) -> PyResult<Bound<'py, PyString>> {
        PyString::from_bytes(self.py, text)
    }

    /// An attribute key: one string object per distinct key of the request.
    fn key(&mut self, key: &Bytes) -> PyResult<Bound<'py, PyString>> {
        if let Some(shared) = self.keys.get(key) {
            return Ok(shared.clone());
        }
        let text = self.text(key)?;
        if self.keys.len() < MAX_SHARED_KEYS {
            self.keys.insert(key.clone(), text.clone());
        }
        Ok(text)
    }

    /// A log record's attributes, as [`Objects::attributes`].
    fn record_attributes(&mut self, kvs: &[Lenient<KeyValue>]) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(self.py);
        for (i, kv) in kvs.iter().enumerate() {
            let value = match &kv.value {
                Some(value) => self.any_value(value)?,
                None => self.py.None().into_bound(self.py),
            };
            let key = match self.by_position.get(i) {
                Some((bytes, key)) if *bytes == kv.key => key.clone(),
                _ => {
                    let key = self.key(&kv.key)?;
                    if let Some(slot) = self.by_position.get_mut(i) {
                        *slot = (kv.key.clone(), key.clone());
                    } else if i < MAX_SHARED_KEYS {
                        self.by_position.push((kv.key.clone(), key.clone()));
                    }
                    key
                }
            };
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }

    /// A repeated `KeyValue` as a dict: a repeated key keeps its last value, at the position
    /// of its first occurrence, as a Python dict does.
    fn attributes(&mut self, kvs: &[Lenient<KeyValue>]) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(self.py);
        for kv in kvs {
            let value = match &kv.value {
                Some(value) => self.any_value(value)?,
                None => self.py.None().into_bound(self.py),
            };
            dict.set_item(self.key(&kv.key)?, value)?;
        }
        Ok(dict)
    }

    /// An `AnyValue` as a plain Python value; `None` when no member of the oneof is set.
    /// Recursion is bounded by prost's recursion limit, which already held while parsing.
    fn any_value(&mut self, value: &AnyValue) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match &value.value {
            None => py.None().into_bound(py),
            Some(Value::StringValue(s)) => self.text(s)?.into_any(),
            Some(Value::BoolValue(b)) => PyBool::new(py, *b).to_owned().into_any(),
            Some(Value::IntValue(i)) => i.into_pyobject(py)?.into_any(),
            Some(Value::DoubleValue(d)) => PyFloat::new(py, *d).into_any(),
            Some(Value::ArrayValue(array)) => {
                let list = PyList::empty(py);
                for item in &array.values {
                    list.append(self.any_value(item)?)?;
                }
                list.into_any()
            }
            Some(Value::KvlistValue(kvlist)) => self.attributes(&kvlist.values)?.into_any(),
            Some(Value::BytesValue(b)) => PyBytes::new(py, b).into_any(),
            Some(Value::StringValueStrindex(i)) => i.into_pyobject(py)?.into_any(),
        })
    }
}

/// (lowercase hex, whether the length is acceptable) for a trace or span id of `size`
/// bytes. Empty and all-zero ids mean "no trace context": "". A wrong length keeps the hex
/// of what was sent, for the dead-letter store.
fn hex_id(id: &[u8], size: usize) -> (String, bool) {
    if id.is_empty() || (id.len() == size && id.iter().all(|&b| b == 0)) {
        return (String::new(), true);
    }
    (hex(id), id.len() == size)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[pymodule]
fn otel_audit_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DecodeError", m.py().get_type::<DecodeError>())?;
    m.add_function(wrap_pyfunction!(decode_logs, m)?)?;
    m.add_class::<Plan>()?;
    m.add_function(wrap_pyfunction!(seal::journal_lines, m)?)?;
    m.add_function(wrap_pyfunction!(seal::merkle_extend, m)?)?;
    m.add_function(wrap_pyfunction!(archive::archive_page, m)?)?;
    m.add_function(wrap_pyfunction!(archive::leaf_hashes, m)?)?;
    Ok(())
}
