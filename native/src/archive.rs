//! One page of an Elasticsearch search response turned into the archive's columns.
//!
//! `archive_page(body, fields)` takes the raw bytes of a `_search` response and, for each
//! hit, writes its `_source` (less the top-level `integrity` field, which the leaf hash
//! leaves out) in sorted-key JSON with the escaping of [`crate::content_hash`]: the RFC 8785
//! form of every document made of strings, booleans, nulls, safe integers and objects whose
//! keys sort alike by UTF-8 bytes and by UTF-16 units. It hashes it as a Merkle leaf
//! (`SHA-256(0x00 || source)`) and pulls the named fields out as strings, all as Arrow
//! buffers, so no Python object is made per value. A document holding anything else (a
//! double, an integer beyond 2**53 - 1, keys that sort differently in UTF-16, a lone
//! surrogate, nesting deeper than [`MAX_DEPTH`]) is reported back with its raw bytes for
//! Python to handle (`indexer.lifecycle.export._prepare`, the reference for all of this).
//! The work runs with the GIL released, so reader threads run it side by side.

use std::borrow::Cow;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use sha2::{Digest, Sha256};
use std::io::Write;

use crate::content_hash::{orders_agree, string};

/// Containers nested deeper than this are left to Python (as in `content_hash`).
const MAX_DEPTH: usize = 200;
/// The largest integer RFC 8785 writes exactly (2**53 - 1).
const MAX_SAFE: u64 = (1 << 53) - 1;
const PREFIX: usize = 8;

/// A parsed JSON value; a string without escapes borrows the body.
enum Json<'a> {
    Null,
    Bool(bool),
    /// An integer within +-(2**53 - 1), written back in decimal.
    Int(i64),
    /// A number JSON writes otherwise (a fraction, an exponent, a large integer).
    Other,
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members in the order sent.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

/// The document is not one the native path writes; Python takes it.
struct Unsupported;

struct Parser<'a> {
    body: &'a [u8],
    pos: usize,
}

type Parsed<T> = Result<T, Unsupported>;

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(&b) = self.body.get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.body.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Parsed<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Parsed<()> {
        if self.body[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    fn value(&mut self, depth: usize) -> Parsed<Json<'a>> {
        if depth > MAX_DEPTH {
            return Err(Unsupported);
        }
        match self.peek().ok_or(Unsupported)? {
            b'{' => {
                self.pos += 1;
                let mut members = Vec::new();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    let value = self.value(depth + 1)?;
                    members.push((key, value));
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(Unsupported),
                    }
                }
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(Unsupported),
                    }
                }
            }
            b'"' => Ok(Json::Str(self.string()?)),
            b't' => self.literal(b"true").map(|()| Json::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Json::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Json::Null),
            _ => self.number(),
        }
    }

    fn number(&mut self) -> Parsed<Json<'a>> {
        let negative = self.body.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.body.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let int = &self.body[digits..self.pos];
        if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
            return Err(Unsupported);
        }
        let mut fraction = false;
        while self
            .body
            .get(self.pos)
            .is_some_and(|b| matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9'))
        {
            fraction = true;
            self.pos += 1;
        }
        if fraction || int.len() > 16 {
            return Ok(Json::Other);
        }
        let mut n: u64 = 0;
        for &d in int {
            n = n * 10 + u64::from(d - b'0');
        }
        if n > MAX_SAFE {
            return Ok(Json::Other);
        }
        // Within 2**53, so the cast is exact; -0 is 0, as Python reads it.
        let n = n as i64;
        Ok(Json::Int(if negative { -n } else { n }))
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let digits = self.body.get(self.pos..self.pos + 4).ok_or(Unsupported)?;
        let mut v = 0u32;
        for &d in digits {
            v = v * 16 + char::from(d).to_digit(16).ok_or(Unsupported)?;
        }
        self.pos += 4;
        Ok(v)
    }

    /// A JSON string at `pos` (its opening quote), unescaped.
    fn string(&mut self) -> Parsed<Cow<'a, str>> {
        if self.body.get(self.pos) != Some(&b'"') {
            return Err(Unsupported);
        }
        self.pos += 1;
        let start = self.pos;
        // Most strings have no escape: one slice of the body.
        while let Some(&b) = self.body.get(self.pos) {
            match b {
                b'"' => {
                    let body: &'a [u8] = self.body;
                    let text =
                        std::str::from_utf8(&body[start..self.pos]).map_err(|_| Unsupported)?;
                    self.pos += 1;
                    return Ok(Cow::Borrowed(text));
                }
                b'\\' => break,
                0x00..=0x1f => return Err(Unsupported),
                _ => self.pos += 1,
            }
        }
        let mut out: Vec<u8> = self.body[start..self.pos].to_vec();
        loop {
            let b = *self.body.get(self.pos).ok_or(Unsupported)?;
            self.pos += 1;
            match b {
                b'"' => {
                    let text = String::from_utf8(out).map_err(|_| Unsupported)?;
                    return Ok(Cow::Owned(text));
                }
                b'\\' => {
                    let e = *self.body.get(self.pos).ok_or(Unsupported)?;
                    self.pos += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if self.body.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                    return Err(Unsupported); // a lone surrogate
                                }
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(Unsupported);
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or(Unsupported)?
                        }
                        _ => return Err(Unsupported),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(Unsupported),
                _ => out.push(b),
            }
        }
    }

    /// Skip any value (the parts of a hit not archived), checking only its shape.
    fn skip(&mut self) -> Parsed<()> {
        self.value(0).map(|_| ())
    }
}

/// `value` in sorted-key JSON; `top` leaves out the top-level `integrity` member.
fn write(out: &mut Vec<u8>, value: &Json, top: bool) -> Parsed<()> {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Json::Other => return Err(Unsupported),
        Json::Str(s) => string(out, s.as_bytes()),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item, false)?;
            }
            out.push(b']');
        }
        Json::Object(members) => {
            let mut order: Vec<&(Cow<'_, str>, Json<'_>)> = members
                .iter()
                .filter(|(k, _)| !(top && &**k == "integrity"))
                .collect();
            // Stable: of a repeated key, the last one sent stays last (and is kept).
            order.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if !orders_agree(order.iter().map(|(k, _)| k.as_bytes())) {
                return Err(Unsupported);
            }
            out.push(b'{');
            let mut first = true;
            for (i, (key, value)) in order.iter().map(|m| (&m.0, &m.1)).enumerate() {
                if order.get(i + 1).is_some_and(|next| next.0 == *key) {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                string(out, key.as_bytes());
                out.push(b':');
                write(out, value, false)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// The value at a dotted path (the last of a repeated key, as a dict keeps it).
fn lookup<'j, 'a>(doc: &'j Json<'a>, path: &[&str]) -> Option<&'j Json<'a>> {
    let mut here = doc;
    for part in path {
        let Json::Object(members) = here else {
            return None;
        };
        here = &members.iter().rev().find(|(k, _)| &**k == *part)?.1;
    }
    Some(here)
}

/// An Arrow variable-size column being built: offsets (i32), data, validity bits.
struct Column {
    offsets: Vec<u8>,
    data: Vec<u8>,
    valid: Vec<u8>,
    nulls: usize,
    rows: usize,
}

impl Column {
    fn new(rows: usize, width: usize) -> Self {
        let mut offsets = Vec::with_capacity((rows + 1) * 4);
        offsets.extend_from_slice(&0i32.to_le_bytes());
        Column {
            offsets,
            data: Vec::with_capacity(rows * width),
            valid: Vec::with_capacity(rows.div_ceil(8)),
            nulls: 0,
            rows: 0,
        }
    }

    /// Add a row: `value` is appended to the data, or None for a null.
    fn push(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        if let Some(v) = value {
            self.data.extend_from_slice(v);
        }
        self.end_row(value.is_some())
    }

    /// Add a row whose bytes were already appended to `data`.
    fn close_row(&mut self) -> Result<(), String> {
        self.end_row(true)
    }

    fn end_row(&mut self, valid: bool) -> Result<(), String> {
        if self.rows % 8 == 0 {
            self.valid.push(0);
        }
        if valid {
            let bit = 1u8 << (self.rows % 8);
            if let Some(last) = self.valid.last_mut() {
                *last |= bit;
            }
        } else {
            self.nulls += 1;
        }
        self.rows += 1;
        let end = i32::try_from(self.data.len())
            .map_err(|_| "a page larger than 2 GiB is not archived in one piece".to_owned())?;
        self.offsets.extend_from_slice(&end.to_le_bytes());
        Ok(())
    }

    fn into_py<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let valid = if self.nulls == 0 {
            py.None().into_bound(py)
        } else {
            PyBytes::new(py, &self.valid).into_any()
        };
        let tuple = (
            PyBytes::new(py, &self.offsets),
            PyBytes::new(py, &self.data),
            valid,
            self.nulls,
        );
        Ok(tuple.into_pyobject(py)?.into_any())
    }
}

/// What a page came to, before any Python object is made.
struct Page<'a> {
    ids: Vec<Cow<'a, str>>,
    columns: Vec<Column>,
    leaves: Vec<[u8; 32]>,
    /// (position, raw `_source` bytes) of the documents left to Python.
    handed_back: Vec<(usize, (usize, usize))>,
    last_sort: Option<(usize, usize)>,
}

/// Whether Python's `str()` of a field's value is written here (not for a float).
fn field_supported(value: Option<&Json<'_>>) -> bool {
    !matches!(value, Some(Json::Other))
}

/// A field's text as Python's `str()` gives it for a scalar; None for null, containers,
/// an absent field (a float is checked by [`field_supported`] first).
fn push_field(column: &mut Column, value: Option<&Json<'_>>) -> Result<(), String> {
    match value {
        None | Some(Json::Null | Json::Array(_) | Json::Object(_) | Json::Other) => {
            column.push(None)
        }
        Some(Json::Str(s)) => column.push(Some(s.as_bytes())),
        Some(Json::Bool(b)) => column.push(Some(if *b { b"True" } else { b"False" })),
        Some(Json::Int(i)) => {
            let mut buf = Vec::with_capacity(20);
            let _ = write!(buf, "{i}");
            column.push(Some(&buf))
        }
    }
}

fn page<'a>(body: &'a [u8], fields: &[String]) -> Result<Page<'a>, String> {
    let paths: Vec<Vec<&str>> = fields.iter().map(|f| f.split('.').collect()).collect();
    let bad = |what: &str| format!("search response is not as expected: {what}");
    let mut p = Parser { body, pos: 0 };
    // Find hits.hits: skip every other member of the response and of "hits".
    let mut hits_at = None;
    p.eat(b'{').map_err(|_| bad("not an object"))?;
    'outer: while p.peek() == Some(b'"') {
        let key = p.string().map_err(|_| bad("a key"))?;
        p.eat(b':').map_err(|_| bad("a member"))?;
        if &*key == "hits" {
            p.eat(b'{').map_err(|_| bad("hits is not an object"))?;
            while p.peek() == Some(b'"') {
                let key = p.string().map_err(|_| bad("a key"))?;
                p.eat(b':').map_err(|_| bad("a member"))?;
                if &*key == "hits" {
                    hits_at = Some(p.pos);
                    break 'outer;
                }
                p.skip().map_err(|_| bad("a value"))?;
                if p.peek() == Some(b',') {
                    p.pos += 1;
                }
            }
            break;
        }
        p.skip().map_err(|_| bad("a value"))?;
        if p.peek() == Some(b',') {
            p.pos += 1;
        }
    }
    let mut out = Page {
        ids: Vec::new(),
        columns: Vec::new(),
        leaves: Vec::new(),
        handed_back: Vec::new(),
        last_sort: None,
    };
    let Some(at) = hits_at else {
        return Ok(out);
    };
    p.pos = at;
    p.eat(b'[').map_err(|_| bad("hits.hits is not an array"))?;
    let mut docs: Vec<Parsed<Json<'a>>> = Vec::new();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    if p.peek() != Some(b']') {
        loop {
            p.eat(b'{').map_err(|_| bad("a hit is not an object"))?;
            let (mut id, mut source, mut sort) = (None, None, None);
            while p.peek() == Some(b'"') {
                let key = p.string().map_err(|_| bad("a key"))?;
                p.eat(b':').map_err(|_| bad("a member"))?;
                p.ws();
                let start = p.pos;
                match &*key {
                    "_id" => id = Some(p.string().map_err(|_| bad("_id is not a string"))?),
                    "_source" => {
                        let parsed = p.value(0);
                        if parsed.is_err() {
                            // Not parsed here: find its end, for Python to read it.
                            p.pos = start;
                            skip_raw(&mut p).map_err(|_| bad("a _source is not JSON"))?;
                        }
                        source = Some((parsed, (start, p.pos)));
                    }
                    "sort" => {
                        p.skip().map_err(|_| bad("sort"))?;
                        sort = Some((start, p.pos));
                    }
                    _ => p.skip().map_err(|_| bad("a value"))?,
                }
                if p.peek() == Some(b',') {
                    p.pos += 1;
                }
            }
            p.eat(b'}').map_err(|_| bad("a hit"))?;
            let id = id.ok_or_else(|| bad("a hit without _id"))?;
            let (parsed, span) = source.ok_or_else(|| bad("a hit without _source"))?;
            out.ids.push(id);
            docs.push(parsed);
            spans.push(span);
            out.last_sort = sort;
            match p.peek() {
                Some(b',') => p.pos += 1,
                Some(b']') => break,
                _ => return Err(bad("hits.hits")),
            }
        }
    }
    let n = docs.len();
    let mut columns: Vec<Column> = Vec::with_capacity(fields.len() + 5);
    columns.push(Column::new(n, 24));
    columns.push(Column::new(n, 24));
    for _ in fields {
        columns.push(Column::new(n, 16));
    }
    columns.push(Column::new(n, PREFIX));
    columns.push(Column::new(n, body.len() / n.max(1)));
    columns.push(Column::new(n, 32));
    let last = columns.len() - 1;
    let mut found: Vec<Option<&Json<'a>>> = Vec::with_capacity(paths.len());
    for (i, doc) in docs.iter().enumerate() {
        columns[0].push(Some(out.ids[i].as_bytes()))?;
        // The source goes straight into its column; taken back if the document is not
        // one written here.
        let written = doc.as_ref().ok().and_then(|doc| {
            if !matches!(doc, Json::Object(_)) {
                return None;
            }
            found.clear();
            found.extend(paths.iter().map(|path| lookup(doc, path)));
            if !found.iter().all(|v| field_supported(*v)) {
                return None;
            }
            let data = &mut columns[last - 1].data;
            let start = data.len();
            if write(data, doc, true).is_err() {
                data.truncate(start);
                return None;
            }
            Some((doc, start))
        });
        let Some((doc, start)) = written else {
            // Placeholders, replaced by Python.
            for c in &mut columns[1..] {
                c.push(Some(b""))?;
            }
            out.leaves.push([0u8; 32]);
            out.handed_back.push((i, spans[i]));
            continue;
        };
        let mut hasher = Sha256::new();
        hasher.update([0u8]);
        hasher.update(&columns[last - 1].data[start..]);
        let leaf: [u8; 32] = hasher.finalize().into();
        columns[last - 1].close_row()?;
        match lookup(doc, &["@timestamp"]) {
            Some(Json::Str(s)) => columns[1].push(Some(s.as_bytes()))?,
            _ => columns[1].push(Some(b""))?,
        }
        for (j, value) in found.iter().enumerate() {
            push_field(&mut columns[2 + j], *value)?;
        }
        columns[last - 2].push(Some(&leaf[..PREFIX]))?;
        columns[last].push(Some(&leaf))?;
        out.leaves.push(leaf);
    }
    out.columns = columns;
    Ok(out)
}

/// Skip a value without building it, matching only brackets and strings (for a document
/// [`Parser::value`] refused, which Python then reads).
fn skip_raw(p: &mut Parser<'_>) -> Parsed<()> {
    let mut depth = 0usize;
    p.ws();
    loop {
        let b = *p.body.get(p.pos).ok_or(Unsupported)?;
        p.pos += 1;
        match b {
            b'"' => loop {
                match *p.body.get(p.pos).ok_or(Unsupported)? {
                    b'\\' => p.pos += 2,
                    b'"' => {
                        p.pos += 1;
                        break;
                    }
                    _ => p.pos += 1,
                }
            },
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1).ok_or(Unsupported)?,
            _ if depth == 0 => {
                while p.body.get(p.pos).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    p.pos += 1;
                }
            }
            _ => {}
        }
        if depth == 0 {
            return Ok(());
        }
    }
}

/// Read one page of a `_search` response for the archive.
///
/// Returns `(ids, columns, leaves, handed_back, last_sort)`: the hits' `_id`s (list of
/// str); Arrow buffers `(offsets, data, validity or None, null count)` for `_id`,
/// `@timestamp` (`""` when absent or not a string), each of `fields` (the dotted path's
/// value as `str()` gives it, None for null, absent or a container), the leaf-hash prefix,
/// the source (sorted-key JSON without `integrity`) and the leaf hash; the leaf hashes
/// (list of 32-byte bytes); `[(position, raw _source bytes)]` of the hits whose values are
/// placeholders for Python to fill in; the raw JSON of the last hit's `sort`, or None.
#[pyfunction]
pub fn archive_page<'py>(
    py: Python<'py>,
    body: &[u8],
    fields: Vec<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let page = py
        .detach(|| page(body, &fields))
        .map_err(PyValueError::new_err)?;
    let ids: Vec<Bound<'py, PyString>> = page.ids.iter().map(|s| PyString::new(py, s)).collect();
    let columns = page
        .columns
        .into_iter()
        .map(|c| c.into_py(py))
        .collect::<PyResult<Vec<_>>>()?;
    let leaves: Vec<Bound<'py, PyBytes>> =
        page.leaves.iter().map(|h| PyBytes::new(py, h)).collect();
    let handed_back: Vec<(usize, Bound<'py, PyBytes>)> = page
        .handed_back
        .iter()
        .map(|&(i, (a, b))| (i, PyBytes::new(py, &body[a..b])))
        .collect();
    let last_sort = page.last_sort.map(|(a, b)| PyBytes::new(py, &body[a..b]));
    let out = (
        PyList::new(py, ids)?,
        PyList::new(py, columns)?,
        PyList::new(py, leaves)?,
        handed_back,
        last_sort,
    );
    Ok(out.into_pyobject(py)?.into_any())
}

/// The bytes of a C-contiguous buffer (`bytes`, a `pyarrow.Buffer`, a memoryview),
/// borrowed from `buffer`.
fn contiguous<'a>(buffer: &'a PyUntypedBuffer, what: &str) -> PyResult<&'a [u8]> {
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} is not a contiguous buffer"
        )));
    }
    if buffer.len_bytes() == 0 {
        return Ok(&[]);
    }
    // SAFETY: the buffer is contiguous, `len_bytes` long, and stays exported (read-only
    // use) while `buffer` is alive, which outlives the returned slice.
    Ok(unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) })
}

/// The Merkle leaf hash (`SHA-256(0x00 || value)`) of every value of an Arrow binary
/// column given by its `offsets` (`count + 1` little-endian i32) and `data` buffers (any
/// contiguous buffer: `bytes` or the column's own `pyarrow.Buffer`s, read in place), as
/// one `bytes` of `count` 32-byte hashes; computed without the GIL (the archive's
/// read-back check hashes every archived event, several columns at once from threads).
/// Raises ValueError for offsets that do not describe `data`.
#[pyfunction]
pub fn leaf_hashes<'py>(
    py: Python<'py>,
    offsets: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    count: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let offsets_buffer = PyUntypedBuffer::get(offsets)?;
    let data_buffer = PyUntypedBuffer::get(data)?;
    let offsets = contiguous(&offsets_buffer, "offsets")?;
    let data = contiguous(&data_buffer, "data")?;
    let hashes = py
        .detach(|| -> Option<Vec<u8>> {
            if offsets.len() != (count + 1) * 4 {
                return None;
            }
            let at = |i: usize| {
                let b = offsets.get(i * 4..i * 4 + 4)?;
                usize::try_from(i32::from_le_bytes(b.try_into().ok()?)).ok()
            };
            let mut out = Vec::with_capacity(count * 32);
            let mut start = at(0)?;
            for i in 1..=count {
                let end = at(i)?;
                let value = data.get(start..end)?;
                let mut hasher = Sha256::new();
                hasher.update([0u8]);
                hasher.update(value);
                out.extend_from_slice(&hasher.finalize());
                start = end;
            }
            Some(out)
        })
        .ok_or_else(|| PyValueError::new_err("the offsets do not describe the data"))?;
    Ok(PyBytes::new(py, &hashes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(json: &str) -> Option<String> {
        let mut p = Parser {
            body: json.as_bytes(),
            pos: 0,
        };
        let doc = p.value(0).ok()?;
        let mut out = Vec::new();
        write(&mut out, &doc, true).ok()?;
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn documents_are_written_with_sorted_keys_and_orjson_escapes() {
        assert_eq!(
            sorted(r#"{"b": [1, -0, true, null], "a": "\u00e9\n\ud83d\ude00", "integrity": 1}"#)
                .unwrap(),
            "{\"a\":\"é\\n😀\",\"b\":[1,0,true,null]}"
        );
        assert_eq!(sorted(r#"{"a": 1, "a": 2}"#).unwrap(), r#"{"a":2}"#);
        assert_eq!(
            sorted(r#"{"x": {"integrity": 1}}"#).unwrap(),
            r#"{"x":{"integrity":1}}"#
        );
    }

    #[test]
    fn what_python_writes_otherwise_is_handed_back() {
        for json in [
            r#"{"a": 1.5}"#,
            r#"{"a": 1e3}"#,
            r#"{"a": 9007199254740992}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"\ue000": 1, "\ud83d\ude00": 2}"#,
        ] {
            assert!(sorted(json).is_none(), "{json}");
        }
        assert!(sorted(r#"{"a": 9007199254740991}"#).is_some());
    }
}
