//! The OTLP logs messages the receiver reads, declared by hand after
//! `opentelemetry/proto/{collector/logs,logs,resource,common}/v1/*.proto` as shipped in the
//! opentelemetry-proto 1.45 Python package.
//!
//! Field numbers and types follow the protos exactly, including the fields the receiver
//! ignores (schema urls, `Resource.entity_refs`, `KeyValue.key_strindex`): the Python
//! decoder (upb) parses them, so a malformed one must fail here too.
//!
//! Every message is wrapped in [`Lenient`] where it is decoded, which keeps two rules of
//! upb (and of the other official protobuf runtimes) that prost's derived code does not:
//! a known field arriving with the wrong wire type is skipped as an unknown field instead
//! of failing the request, and every occurrence of a string field must be UTF-8, even one
//! a later occurrence replaces.
//!
//! The strings the receiver keeps are held as [`Bytes`] slices of the request body rather
//! than `String`s: parsing then allocates nothing per string. [`Lenient`] has checked them.

use std::ops::Deref;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{decode_varint, skip_field, DecodeContext, WireType};
use prost::{DecodeError, Message, Oneof};

/// How a known field is encoded on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Varint,
    Fixed64,
    Fixed32,
    /// Length-delimited, not text: bytes or a message.
    Delimited,
    /// Length-delimited UTF-8 text: a proto `string`.
    Text,
}

impl Field {
    fn wire_type(self) -> WireType {
        match self {
            Field::Varint => WireType::Varint,
            Field::Fixed64 => WireType::SixtyFourBit,
            Field::Fixed32 => WireType::ThirtyTwoBit,
            Field::Delimited | Field::Text => WireType::LengthDelimited,
        }
    }
}

/// The fields a message declares.
pub trait Fields {
    /// `None` for a field number the message does not declare.
    fn field(tag: u32) -> Option<Field>;
}

/// A message decoded with upb's rules for wire-type mismatches and string fields.
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
        match M::field(tag) {
            Some(field) if field.wire_type() != wire_type => skip_field(wire_type, tag, buf, ctx),
            Some(Field::Text) => {
                check_utf8(buf.chunk(), ctx.clone())?;
                self.0.merge_field(tag, wire_type, buf, ctx)
            }
            _ => self.0.merge_field(tag, wire_type, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear()
    }
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
        Some(text) if std::str::from_utf8(text).is_err() => prost::encoding::string::merge(
            WireType::LengthDelimited,
            &mut String::new(),
            &mut &chunk[..],
            ctx,
        ),
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
fields!(ExportLogsServiceRequest { 1 => Delimited });

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
fields!(ResourceLogs { 1 => Delimited, 2 => Delimited, 3 => Text });

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
fields!(Resource { 1 => Delimited, 2 => Varint, 3 => Delimited });

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
fields!(ScopeLogs { 1 => Delimited, 2 => Delimited, 3 => Text });

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
fields!(InstrumentationScope { 1 => Text, 2 => Text, 3 => Delimited, 4 => Varint });

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
    5 => Delimited,
    6 => Delimited,
    7 => Varint,
    8 => Fixed32,
    9 => Delimited,
    10 => Delimited,
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
    5 => Delimited,
    6 => Delimited,
    7 => Delimited,
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
fields!(ArrayValue { 1 => Delimited });

/// `opentelemetry.proto.common.v1.KeyValueList`
#[derive(Clone, PartialEq, Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Lenient<KeyValue>>,
}
fields!(KeyValueList { 1 => Delimited });

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
fields!(KeyValue { 1 => Text, 2 => Delimited, 3 => Varint });
