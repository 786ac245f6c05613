//! The content hash of a decoded record (`docs/hashing.md`): the SHA-256 of the RFC 8785
//! form of `record.as_wire_dict()`, integers written exactly, bytes as
//! `{"$bytes": <padded standard base64>}` (`otel_audit.integrity.content` in Python),
//! written here straight from the parsed message.
//!
//! The hash is stored with every event and compared when a retry meets the stored copy, so
//! it must not depend on which decoder built the record. What is written here is therefore
//! limited to what is certain: keys sorted by their UTF-8 bytes (code point order, which is
//! RFC 8785's UTF-16 order unless an object mixes a key with a character above U+FFFF and
//! one with a character in U+E000..U+FFFF: such a record is left to Python), a repeated
//! key keeping its last value (as the record's dict does), no whitespace, strings with
//! only `"`, `\` and control characters escaped (short forms where JSON has them, else
//! `\u00xx` in lowercase; everything else raw UTF-8), integers in decimal. A record holding
//! a double anywhere is left to Python ([`Unsupported`]): RFC 8785 number formatting is not
//! worth reproducing.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use prost::bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::otlp::{AnyValue, KeyValue, Lenient, LogRecord, Value};

/// The record holds a value whose encoding is not reproduced here.
pub struct Unsupported;

type Written = Result<(), Unsupported>;

/// Containers nested deeper than this are left to Python: orjson refuses more than 255
/// levels and Python then falls back to another encoding. (prost's recursion limit keeps
/// real requests far below either.)
const MAX_DEPTH: usize = 200;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The strings of a record that come from its scope and resource, written once for all the
/// records that share them.
pub struct Shared<'a> {
    /// The resource attributes as a JSON object, or why they cannot be written.
    pub resource: &'a Result<Vec<u8>, Unsupported>,
    pub scope_name: &'a [u8],
    pub scope_version: &'a [u8],
}

/// A repeated `KeyValue` as the JSON object of its dict.
pub fn attributes(kvs: &[Lenient<KeyValue>]) -> Result<Vec<u8>, Unsupported> {
    let mut out = Vec::new();
    kvlist(&mut out, kvs, 2)?;
    Ok(out)
}

/// The hex SHA-256 of `record`'s wire form; `buf` is scratch space reused across records.
pub fn record_hash(
    buf: &mut Vec<u8>,
    lr: &LogRecord,
    shared: &Shared<'_>,
    trace_id: &str,
    span_id: &str,
) -> Result<String, Unsupported> {
    buf.clear();
    let resource = shared.resource.as_ref().map_err(|_| Unsupported)?;
    // The keys of `LogRecordData.as_wire_dict`, sorted.
    buf.extend_from_slice(b"{\"attributes\":");
    kvlist(buf, &lr.attributes, 2)?;
    buf.extend_from_slice(b",\"body\":");
    match &lr.body {
        Some(body) => any_value(buf, body, 2)?,
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"event_name\":");
    string(buf, &lr.event_name);
    integer(buf, b",\"flags\":", lr.flags);
    integer(
        buf,
        b",\"observed_time_unix_nano\":",
        lr.observed_time_unix_nano,
    );
    buf.extend_from_slice(b",\"resource\":");
    buf.extend_from_slice(resource);
    buf.extend_from_slice(b",\"scope_name\":");
    string(buf, shared.scope_name);
    buf.extend_from_slice(b",\"scope_version\":");
    string(buf, shared.scope_version);
    integer(buf, b",\"severity_number\":", lr.severity_number);
    buf.extend_from_slice(b",\"severity_text\":");
    string(buf, &lr.severity_text);
    buf.extend_from_slice(b",\"span_id\":");
    string(buf, span_id.as_bytes());
    integer(buf, b",\"time_unix_nano\":", lr.time_unix_nano);
    buf.extend_from_slice(b",\"trace_id\":");
    string(buf, trace_id.as_bytes());
    buf.push(b'}');

    let digest = Sha256::digest(buf.as_slice());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    Ok(hex)
}

fn integer(out: &mut Vec<u8>, key: &[u8], value: impl std::fmt::Display) {
    out.extend_from_slice(key);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// A JSON object of `kvs`, `depth` containers deep: keys sorted, a repeated key keeping its
/// last value.
fn kvlist(out: &mut Vec<u8>, kvs: &[Lenient<KeyValue>], depth: usize) -> Written {
    if depth > MAX_DEPTH {
        return Err(Unsupported);
    }
    let mut order: Vec<(&Bytes, &Option<Lenient<AnyValue>>)> =
        kvs.iter().map(|kv| (&kv.key, &kv.value)).collect();
    // Stable: of a repeated key's occurrences, the last one sent stays last.
    order.sort_by(|a, b| a.0.cmp(b.0));
    if !orders_agree(order.iter().map(|(key, _)| &key[..])) {
        return Err(Unsupported);
    }
    out.push(b'{');
    let mut first = true;
    for (i, (key, value)) in order.iter().enumerate() {
        if order.get(i + 1).is_some_and(|next| next.0 == *key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, key);
        out.push(b':');
        match value {
            Some(value) => any_value(out, value, depth + 1)?,
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    Ok(())
}

/// Whether sorting `keys` (UTF-8) by their bytes gives RFC 8785's order, by UTF-16 code
/// units. Both are code point order except that UTF-16 puts characters above U+FFFF
/// (surrogate pairs, D800..DFFF) before U+E000..U+FFFF; so they agree unless some key has
/// a 4-byte UTF-8 sequence (lead byte F0..F4) and some key a character in U+E000..U+FFFF
/// (lead byte EE or EF).
pub(crate) fn orders_agree<'k>(keys: impl Iterator<Item = &'k [u8]>) -> bool {
    let (mut astral, mut high) = (false, false);
    // Nearly every key is ASCII: std checks that a word at a time, the loop a byte at a time.
    for key in keys.filter(|key| !key.is_ascii()) {
        for &b in key {
            match b {
                0xEE | 0xEF => high = true,
                0xF0..=0xFF => astral = true,
                _ => {}
            }
        }
    }
    !(astral && high)
}

/// An `AnyValue` as the JSON of the Python value the decoder makes of it.
fn any_value(out: &mut Vec<u8>, value: &AnyValue, depth: usize) -> Written {
    match &value.value {
        None => out.extend_from_slice(b"null"),
        Some(Value::StringValue(s)) => string(out, s),
        Some(Value::BoolValue(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::IntValue(i)) => integer(out, b"", i),
        Some(Value::StringValueStrindex(i)) => integer(out, b"", i),
        Some(Value::DoubleValue(_)) => return Err(Unsupported),
        Some(Value::ArrayValue(array)) => {
            if depth + 1 > MAX_DEPTH {
                return Err(Unsupported);
            }
            out.push(b'[');
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                any_value(out, item, depth + 1)?;
            }
            out.push(b']');
        }
        Some(Value::KvlistValue(kvs)) => kvlist(out, &kvs.values, depth + 1)?,
        Some(Value::BytesValue(b)) => {
            out.extend_from_slice(b"{\"$bytes\":\"");
            let start = out.len();
            out.resize(start + b.len().div_ceil(3) * 4, 0);
            let written = STANDARD
                .encode_slice(b, &mut out[start..])
                .map_err(|_| Unsupported)?;
            out.truncate(start + written);
            out.extend_from_slice(b"\"}");
        }
    }
    Ok(())
}

/// A JSON string of UTF-8 `text` (checked while parsing), escaped as orjson escapes.
pub(crate) fn string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    // Most strings need no escape at all, and are told so eight bytes at a time.
    let clean = clean_prefix(text);
    out.extend_from_slice(&text[..clean]);
    let mut start = clean;
    for (i, &b) in text.iter().enumerate().skip(clean) {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        start = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

/// The length of the longest prefix of `text` that JSON writes unescaped.
fn clean_prefix(text: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether a byte of `word` is below `n` (`n` <= 0x80): exact for the word as a whole.
    let any_below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH != 0;
    let any_equal = |word: u64, b: u8| any_below(word ^ (ONES * u64::from(b)), 1);
    let mut clean = 0;
    for chunk in text.chunks_exact(8) {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
        if any_below(word, 0x20) || any_equal(word, b'"') || any_equal(word, b'\\') {
            break;
        }
        clean += 8;
    }
    clean
        + text[clean..]
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
            .unwrap_or(text.len() - clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_string(text: &str) -> String {
        let mut out = Vec::new();
        string(&mut out, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_orjson_escapes_them() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            json_string("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}"),
            "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\u{7f}\""
        );
        assert_eq!(json_string("é\u{2028}😀/"), "\"é\u{2028}😀/\"");
        assert_eq!(
            json_string("0123456789abcdef\u{7f}\u{80}\u{ff}\n"),
            "\"0123456789abcdef\u{7f}\u{80}\u{ff}\\n\""
        );
    }

    #[test]
    fn key_orders_disagree_only_for_astral_and_high_bmp_characters() {
        let agree = |keys: &[&str]| orders_agree(keys.iter().map(|k| k.as_bytes()));
        assert!(agree(&["a", "é", "\u{d7ff}", "\u{1f600}"]));
        assert!(agree(&["\u{e000}", "\u{ffff}", "z"]));
        assert!(!agree(&["\u{e000}", "\u{1f600}"]));
        assert!(!agree(&["a\u{ffff}b\u{10000}"]));
        // The sort is by bytes, which is code point order.
        let mut keys = vec!["\u{1f600}".as_bytes(), "\u{e000}".as_bytes(), b"z"];
        keys.sort();
        assert_eq!(
            keys,
            [
                "z".as_bytes(),
                "\u{e000}".as_bytes(),
                "\u{1f600}".as_bytes()
            ]
        );
    }

    #[test]
    fn clean_prefix_stops_at_the_first_byte_to_escape() {
        for len in 0..20 {
            for at in 0..len {
                for bad in [0x00, 0x1f, b'"', b'\\'] {
                    let mut text = vec![b'a'; len];
                    text[at] = bad;
                    if at + 1 < len {
                        text[at + 1] = 0xff;
                    }
                    assert_eq!(clean_prefix(&text), at, "{text:?}");
                }
            }
            let text: Vec<u8> = (0..len)
                .map(|i| [b' ', b'~', 0x7f, 0x80, 0xff][i % 5])
                .collect();
            assert_eq!(clean_prefix(&text), len);
        }
    }
}
