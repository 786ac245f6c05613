//! The sealer's per-event work, done for a whole batch at once: the journal's lines and
//! the Merkle tree's right edge.
//!
//! The Python code is the reference: `receiver.sealing.state.Journal` writes the same lines
//! with orjson and `otel_audit.integrity.merkle.CompactRange` extends the same edge with
//! hashlib; `tests/receiver/sealing/test_seal_native.py` holds the two identical.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use sha2::{Digest, Sha256};

use crate::content_hash::string;

const HASH_SIZE: usize = 32;

/// Write `column[i]`, a str, as a JSON string.
fn put_text(out: &mut Vec<u8>, column: &Bound<'_, PyList>, i: usize) -> PyResult<()> {
    let item = column.get_item(i)?;
    string(out, item.cast::<PyString>()?.to_str()?.as_bytes());
    Ok(())
}

/// The journal lines of the entries (one JSON array per entry: index, event id, base64
/// leaf hash, `@timestamp`), as orjson writes them, and the offset just past each line
/// counted from `start`.
#[pyfunction]
pub fn journal_lines<'py>(
    py: Python<'py>,
    index_names: &Bound<'py, PyList>,
    event_ids: &Bound<'py, PyList>,
    leaf_hashes: &Bound<'py, PyList>,
    timestamps: &Bound<'py, PyList>,
    start: u64,
) -> PyResult<(Bound<'py, PyBytes>, Vec<u64>)> {
    let n = event_ids.len();
    if [index_names.len(), leaf_hashes.len(), timestamps.len()] != [n; 3] {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "journal columns differ in length",
        ));
    }
    let mut out = Vec::with_capacity(n * 128);
    let mut ends = Vec::with_capacity(n);
    let mut b64 = String::with_capacity(44);
    for i in 0..n {
        out.push(b'[');
        put_text(&mut out, index_names, i)?;
        out.push(b',');
        put_text(&mut out, event_ids, i)?;
        out.extend_from_slice(b",\"");
        b64.clear();
        STANDARD.encode_string(
            leaf_hashes.get_item(i)?.cast::<PyBytes>()?.as_bytes(),
            &mut b64,
        );
        out.extend_from_slice(b64.as_bytes());
        out.extend_from_slice(b"\",");
        put_text(&mut out, timestamps, i)?;
        out.extend_from_slice(b"]\n");
        ends.push(start + out.len() as u64);
    }
    Ok((PyBytes::new(py, &out), ends))
}

/// Append leaf hashes to a compact range of `size` leaves whose subtree roots are
/// `hashes` (largest first). Returns the new roots and how many leaves went in: it stops
/// at the first leaf that is not 32 bytes of `bytes`, for Python to take over from there.
#[pyfunction]
pub fn merkle_extend<'py>(
    py: Python<'py>,
    size: u64,
    hashes: &Bound<'py, PyList>,
    leaves: &Bound<'py, PyList>,
) -> PyResult<(Vec<Bound<'py, PyBytes>>, usize)> {
    if hashes.len() != size.count_ones() as usize {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "a compact range of size {size} has {} hashes, got {}",
            size.count_ones(),
            hashes.len()
        )));
    }
    let mut edge: Vec<[u8; HASH_SIZE]> = Vec::with_capacity(64);
    for h in hashes.iter() {
        edge.push(digest_of(&h).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err("compact range hashes must be 32 bytes")
        })?);
    }
    let mut taken = leaves.len();
    for (i, leaf) in leaves.iter().enumerate() {
        let Some(mut h) = digest_of(&leaf) else {
            taken = i;
            break;
        };
        let mut n = size + i as u64;
        while n & 1 == 1 {
            let left = edge.pop().unwrap_or_default();
            let mut hasher = Sha256::new();
            hasher.update([1u8]);
            hasher.update(left);
            hasher.update(h);
            h = hasher.finalize().into();
            n >>= 1;
        }
        edge.push(h);
    }
    let roots = edge.iter().map(|h| PyBytes::new(py, h)).collect();
    Ok((roots, taken))
}

fn digest_of(value: &Bound<'_, PyAny>) -> Option<[u8; HASH_SIZE]> {
    let bytes = value.cast::<PyBytes>().ok()?;
    bytes.as_bytes().try_into().ok()
}
