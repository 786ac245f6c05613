//! The OTLP logs messages the receiver reads, declared by hand after
//! `opentelemetry/proto/{collector/logs,logs,resource,common}/v1/*.proto` as shipped in the
//! opentelemetry-proto 1.45 Python package.
//!
//! Field numbers and types follow the protos exactly, including the fields the receiver
//! ignores (schema urls, `Resource.entity_refs`, `KeyValue.key_strindex`): the Python
//! decoder (upb) parses them, so a malformed one must fail here too.
//!
//! Every message is wrapped in [`Lenient`] where it is decoded, which keeps the rules of
//! upb (the Python decoder; the other official runtimes agree) where prost's derived code
//! differs:
//! - a known field arriving with the wrong wire type is skipped as an unknown field instead
//!   of failing the request;
//! - every occurrence of a string field must be UTF-8, even one a later occurrence replaces;
//! - a 10-byte varint value keeps its low 64 bits (prost refuses a 10th byte over 1), and a
//!   key or a length varint may not run past 5 bytes (prost reads up to 10);
//! - skipping an unknown field is not bounded by the recursion limit, and unknown groups
//!   count one level each against it (prost also counts the fields inside them), may hold
//!   field number 0, and may nest as deep as the enclosing messages leave room for.
//!
//! The strings the receiver keeps are held as [`Bytes`] slices of the request body rather
//! than `String`s: parsing then allocates nothing per string. [`Lenient`] has checked them.

use std::cell::Cell;
use std::ops::Deref;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{decode_varint, encode_varint, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message, Oneof};

/// Messages and groups nested deeper than this make the body invalid, in upb as in prost.
const RECURSION_LIMIT: u32 = 100;

thread_local! {
    /// How many messages enclose the one being parsed, which bounds its unknown groups.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Parse a whole message with [`Lenient`]'s rules.
pub fn decode<M: Message + Fields + Default>(body: Bytes) -> Result<Lenient<M>, DecodeError> {
    DEPTH.set(0);
    if too_long(&body) {
        return Err(error("key varint longer than 5 bytes"));
    }
    Lenient::<M>::decode(body)
}

/// How a known field is encoded on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Varint,
    Fixed64,
    Fixed32,
    /// Length-delimited bytes.
    Bytes,
    /// Length-delimited UTF-8 text: a proto `string`.
    Text,
    /// Length-delimited message.
    Message,
}

impl Field {
    fn wire_type(self) -> WireType {
        match self {
            Field::Varint => WireType::Varint,
            Field::Fixed64 => WireType::SixtyFourBit,
            Field::Fixed32 => WireType::ThirtyTwoBit,
            Field::Bytes | Field::Text | Field::Message => WireType::LengthDelimited,
        }
    }
}

/// The fields a message declares.
pub trait Fields {
    /// `None` for a field number the message does not declare.
    fn field(tag: u32) -> Option<Field>;
}

/// A message decoded with upb's rules (see the module's documentation).
#[derive(Clone, Default, PartialEq)]
pub struct Lenient<M>(pub M);

impl<M: std::fmt::Debug> std::fmt::Debug for Lenient<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<M> Deref for Lenient<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.0
    }
}

impl<M: Message + Fields> Message for Lenient<M> {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.0.encode_raw(buf)
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.merge_one(tag, wire_type, buf, ctx)?;
        // Whatever follows a field is a key, of this message or of an enclosing one, or
        // the end of the body: prost reads keys of up to 10 bytes, upb of up to 5.
        if too_long(buf.chunk()) {
            return Err(error("key varint longer than 5 bytes"));
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear()
    }
}

impl<M: Message + Fields> Lenient<M> {
    /// Merge one field by upb's rules (see the module's documentation).
    fn merge_one(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match M::field(tag) {
            Some(_) if wire_type == WireType::LengthDelimited && too_long(buf.chunk()) => {
                Err(error("length varint longer than 5 bytes"))
            }
            Some(field) if field.wire_type() == wire_type => match field {
                Field::Text => {
                    check_utf8(buf.chunk(), ctx.clone())?;
                    self.0.merge_field(tag, wire_type, buf, ctx)
                }
                Field::Varint => match overflowing_varint(buf.chunk()) {
                    // Re-encoded as the 64-bit value upb keeps, for prost to read.
                    Some((value, len)) => {
                        let mut canonical = Vec::with_capacity(10);
                        encode_varint(value, &mut canonical);
                        self.0
                            .merge_field(tag, wire_type, &mut canonical.as_slice(), ctx)?;
                        buf.advance(len);
                        Ok(())
                    }
                    None => self.0.merge_field(tag, wire_type, buf, ctx),
                },
                Field::Message => {
                    // The first key of the message (the others follow a field of it).
                    if first_key_too_long(buf.chunk()) {
                        return Err(error("key varint longer than 5 bytes"));
                    }
                    let depth = DEPTH.get();
                    DEPTH.set(depth + 1);
                    let merged = self.0.merge_field(tag, wire_type, buf, ctx);
                    DEPTH.set(depth);
                    merged
                }
                _ => self.0.merge_field(tag, wire_type, buf, ctx),
            },
            _ => skip_unknown(tag, wire_type, buf, DEPTH.get()),
        }
    }
}

/// Skip an unknown field of a message nested `depth` messages deep.
fn skip_unknown(
    tag: u32,
    wire_type: WireType,
    buf: &mut impl Buf,
    depth: u32,
) -> Result<(), DecodeError> {
    if wire_type == WireType::Varint {
        if let Some((_, len)) = overflowing_varint(buf.chunk()) {
            buf.advance(len);
            return Ok(());
        }
    }
    if wire_type == WireType::LengthDelimited && too_long(buf.chunk()) {
        return Err(error("length varint longer than 5 bytes"));
    }
    if wire_type != WireType::StartGroup {
        // A fresh context: skipping a scalar is no nesting, whatever the message's depth.
        return skip_field(wire_type, tag, buf, DecodeContext::default());
    }
    let depth = depth + 1;
    if depth > RECURSION_LIMIT {
        return Err(error("recursion limit reached"));
    }
    loop {
        if too_long(buf.chunk()) {
            return Err(error("key varint longer than 5 bytes"));
        }
        let key = u32::try_from(decode_varint(buf)?).map_err(|_| error("invalid key value"))?;
        let inner_tag = key >> 3;
        match WireType::try_from(u64::from(key & 0x07))? {
            WireType::EndGroup if inner_tag == tag => return Ok(()),
            inner => skip_unknown(inner_tag, inner, buf, depth)?,
        }
    }
}

/// Whether the varint at the start of `chunk` runs past 5 bytes, which upb refuses for a
/// key or a length (prost reads up to 10).
fn too_long(chunk: &[u8]) -> bool {
    chunk
        .get(..5)
        .is_some_and(|head| head.iter().all(|&b| b >= 0x80))
}

/// Whether the length-delimited message at the start of `chunk` is not empty and starts
/// with a key longer than 5 bytes. A bad length is left for the message's decoder.
fn first_key_too_long(chunk: &[u8]) -> bool {
    let mut rest = chunk;
    matches!(decode_varint(&mut rest), Ok(len) if len > 0) && too_long(rest)
}

/// `(value, length)` of a 10-byte varint at the start of `chunk` whose last byte carries
/// bits past 64, which upb drops and prost refuses; `None` for any other varint.
fn overflowing_varint(chunk: &[u8]) -> Option<(u64, usize)> {
    let bytes = chunk.get(..10)?;
    if bytes[..9].iter().any(|&b| b < 0x80) || bytes[9] < 0x02 || bytes[9] >= 0x80 {
        return None;
    }
    let value = bytes.iter().enumerate().fold(0u64, |value, (i, &b)| {
        value | u64::from(b & 0x7f).wrapping_shl(7 * i as u32)
    });
    Some((value, 10))
}

#[allow(deprecated)] // prost 0.14 still offers no other way to word an error of our own
fn error(description: &'static str) -> DecodeError {
    DecodeError::new(description)
}

/// Check that the length-delimited value at the start of `chunk` is UTF-8, without
/// consuming it. The body is parsed from one contiguous buffer, so `chunk` holds all that
/// is left of it. A bad length is left for the field's own decoder to report.
fn check_utf8(chunk: &[u8], ctx: DecodeContext) -> Result<(), DecodeError> {
    let mut rest = chunk;
    let Ok(len) = decode_varint(&mut rest) else {
        return Ok(());
    };
    match usize::try_from(len).ok().and_then(|len| rest.get(..len)) {
        // prost's own string decoder, run only here, words the error as it always does.
        // (Most text is ASCII, which is quicker to tell apart than UTF-8.)
        Some(text) if !text.is_ascii() && std::str::from_utf8(text).is_err() => {
            let mut whole = chunk;
            prost::encoding::string::merge(
                WireType::LengthDelimited,
                &mut String::new(),
                &mut whole,
                ctx,
            )
        }
        _ => Ok(()),
    }
}

macro_rules! fields {
    ($message:ty { $($tag:literal => $field:ident),* $(,)? }) => {
        impl Fields for $message {
            fn field(tag: u32) -> Option<Field> {
                match tag {
                    $($tag => Some(Field::$field),)*
                    _ => None,
                }
            }
        }
    };
}

/// `opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest`
#[derive(Clone, PartialEq, Message)]
pub struct ExportLogsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<Lenient<ResourceLogs>>,
}
fields!(ExportLogsServiceRequest { 1 => Message });

/// `opentelemetry.proto.logs.v1.ResourceLogs`
#[derive(Clone, PartialEq, Message)]
pub struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Lenient<Resource>>,
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<Lenient<ScopeLogs>>,
    #[prost(bytes = "bytes", tag = "3")]
    pub schema_url: Bytes,
}
fields!(ResourceLogs { 1 => Message, 2 => Message, 3 => Text });

/// `opentelemetry.proto.resource.v1.Resource`
#[derive(Clone, PartialEq, Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<Lenient<KeyValue>>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
    #[prost(message, repeated, tag = "3")]
    pub entity_refs: Vec<Lenient<EntityRef>>,
}
fields!(Resource { 1 => Message, 2 => Varint, 3 => Message });

/// `opentelemetry.proto.common.v1.EntityRef`
#[derive(Clone, PartialEq, Message)]
pub struct EntityRef {
    #[prost(bytes = "bytes", tag = "1")]
    pub schema_url: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub r#type: Bytes,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub id_keys: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "4")]
    pub description_keys: Vec<Bytes>,
}
fields!(EntityRef { 1 => Text, 2 => Text, 3 => Text, 4 => Text });

/// `opentelemetry.proto.logs.v1.ScopeLogs`
#[derive(Clone, PartialEq, Message)]
pub struct ScopeLogs {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<Lenient<InstrumentationScope>>,
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<Lenient<LogRecord>>,
    #[prost(bytes = "bytes", tag = "3")]
    pub schema_url: Bytes,
}
fields!(ScopeLogs { 1 => Message, 2 => Message, 3 => Text });

/// `opentelemetry.proto.common.v1.InstrumentationScope`
#[derive(Clone, PartialEq, Message)]
pub struct InstrumentationScope {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub version: Bytes,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<Lenient<KeyValue>>,
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}
fields!(InstrumentationScope { 1 => Text, 2 => Text, 3 => Message, 4 => Varint });

/// `opentelemetry.proto.logs.v1.LogRecord`
#[derive(Clone, PartialEq, Message)]
pub struct LogRecord {
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
    /// `SeverityNumber`, an open enum: any int32 is kept as sent.
    #[prost(int32, tag = "2")]
    pub severity_number: i32,
    #[prost(bytes = "bytes", tag = "3")]
    pub severity_text: Bytes,
    #[prost(message, optional, tag = "5")]
    pub body: Option<Lenient<AnyValue>>,
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<Lenient<KeyValue>>,
    #[prost(uint32, tag = "7")]
    pub dropped_attributes_count: u32,
    #[prost(fixed32, tag = "8")]
    pub flags: u32,
    #[prost(bytes = "bytes", tag = "9")]
    pub trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "10")]
    pub span_id: Bytes,
    #[prost(bytes = "bytes", tag = "12")]
    pub event_name: Bytes,
}
fields!(LogRecord {
    1 => Fixed64,
    2 => Varint,
    3 => Text,
    5 => Message,
    6 => Message,
    7 => Varint,
    8 => Fixed32,
    9 => Bytes,
    10 => Bytes,
    11 => Fixed64,
    12 => Text,
});

/// `opentelemetry.proto.common.v1.AnyValue`
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<Value>,
}
fields!(AnyValue {
    1 => Text,
    2 => Varint,
    3 => Varint,
    4 => Fixed64,
    5 => Message,
    6 => Message,
    7 => Bytes,
    8 => Varint,
});

/// The `value` oneof of `AnyValue`: the last member on the wire wins, as in every runtime.
#[allow(clippy::enum_variant_names)] // the proto's member names
#[derive(Clone, PartialEq, Oneof)]
pub enum Value {
    /// UTF-8, checked by [`Lenient`].
    #[prost(bytes = "bytes", tag = "1")]
    StringValue(Bytes),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(int64, tag = "3")]
    IntValue(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    ArrayValue(Lenient<ArrayValue>),
    #[prost(message, tag = "6")]
    KvlistValue(Lenient<KeyValueList>),
    #[prost(bytes = "bytes", tag = "7")]
    BytesValue(Bytes),
    /// An index into a profiles dictionary; logs have none, so it stays a plain int.
    #[prost(int32, tag = "8")]
    StringValueStrindex(i32),
}

/// `opentelemetry.proto.common.v1.ArrayValue`
#[derive(Clone, PartialEq, Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Lenient<AnyValue>>,
}
fields!(ArrayValue { 1 => Message });

/// `opentelemetry.proto.common.v1.KeyValueList`
#[derive(Clone, PartialEq, Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Lenient<KeyValue>>,
}
fields!(KeyValueList { 1 => Message });

/// `opentelemetry.proto.common.v1.KeyValue`
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Lenient<AnyValue>>,
    #[prost(int32, tag = "3")]
    pub key_strindex: i32,
}
fields!(KeyValue { 1 => Text, 2 => Message, 3 => Varint });
