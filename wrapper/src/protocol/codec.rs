//! Negotiation (the wrapper's query string) and the three frame encodings.
//!
//! - `json`: the envelope as UTF-8 JSON in a **text** frame.
//! - `bson`: a **binary** frame holding the BSON document `{data: <envelope>}`.
//! - `msgpack`: a **binary** frame holding the bare envelope map.
//!
//! Messages are (de)serialized through `serde_json::Value`, and what JSON lacks is represented
//! as [`crate::value`] describes: a BSON binary or msgpack `bin` becomes the tagged object
//! `{"$binary": {"base64": ..., "subType": ...}}` ([`binary`] and [`as_bytes`] build and read
//! it), which the BSON and msgpack encoders write back as binary. A JSON peer sees the tagged
//! object as is. [`Encoding`], [`binary`] and [`as_bytes`] live in [`crate::value`] and are
//! re-exported here.
//!
//! Nothing here panics on frame contents: nesting deeper than [`MAX_DEPTH`] and every other
//! malformation is an [`Error`].

use std::fmt;

use bson::raw::{RawArray, RawBsonRef, RawDocument};
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::messages::{Envelope, FromAlgorithm, ToAlgorithm};
use super::{Error, PROTOCOL_VERSION};
pub use crate::value::{as_bytes, binary, Encoding};
use crate::value::{binary_with_subtype, double, tagged_binary, AnyValue, WithBinary};

/// Deepest nesting of arrays and objects accepted in a frame (serde_json's own limit).
pub const MAX_DEPTH: usize = 128;

/// Who moves task data, asked for with `storage=` in the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageMode {
    /// The worker resolves inputs and stores the output carried by `done` (debug / legacy; the
    /// worker's default).
    #[default]
    V1,
    /// The wrapper resolves its own inputs and stores its own output (`storing`, then bare
    /// `done`). `v2` is read as `v3`.
    V3,
}

impl StorageMode {
    /// `v1`, `v2` or `v3` (`v2` gives [`StorageMode::V3`]), ignoring ASCII case and blanks.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "v1" => Some(Self::V1),
            "v2" | "v3" => Some(Self::V3),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V3 => "v3",
        }
    }
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the wrapper asked for in its connection URL's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub storage: StorageMode,
    pub encoding: Encoding,
    /// The wrapper's host name (Python sends it when redirecting logs), percent-decoded.
    pub hostname: Option<String>,
    /// hkube extension: the wrapper speaks the fast path (`fast=1`).
    pub fast: bool,
    /// Parameters that were present but not understood, and what was used instead, for the
    /// sidecar to log (e.g. "unknown encoding `xml`; using json").
    pub warnings: Vec<String>,
}

impl Default for Negotiated {
    /// HKube's worker defaults: storage `v1`, encoding `json`, no fast path.
    fn default() -> Self {
        Negotiated {
            storage: StorageMode::V1,
            encoding: Encoding::Json,
            hostname: None,
            fast: false,
            warnings: Vec::new(),
        }
    }
}

impl Negotiated {
    /// Reads `storage`, `encoding`, `hostname` and `fast` from a query string (with or without
    /// the leading `?`). A missing or empty parameter takes HKube's default (storage `v1`,
    /// encoding `json`); an unknown value also takes the default and adds a warning. The first
    /// occurrence of a repeated parameter wins; other parameters are ignored.
    pub fn from_query(query: Option<&str>) -> Negotiated {
        let mut negotiated = Negotiated::default();
        let (mut storage, mut encoding, mut hostname, mut fast) = (None, None, None, None);
        let query = query.unwrap_or("");
        for pair in query.strip_prefix('?').unwrap_or(query).split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match percent_decode(key).as_str() {
                "storage" => &mut storage,
                "encoding" => &mut encoding,
                "hostname" => &mut hostname,
                "fast" => &mut fast,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(percent_decode(value));
            }
        }
        let present = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        if let Some(value) = present(storage) {
            match StorageMode::parse(&value) {
                Some(mode) => negotiated.storage = mode,
                None => negotiated.warnings.push(format!(
                    "unknown storage `{value}`; using {}",
                    negotiated.storage
                )),
            }
        }
        if let Some(value) = present(encoding) {
            match Encoding::parse(&value) {
                Some(enc) => negotiated.encoding = enc,
                None => negotiated.warnings.push(format!(
                    "unknown encoding `{value}`; using {}",
                    negotiated.encoding
                )),
            }
        }
        negotiated.hostname = present(hostname);
        if let Some(value) = present(fast) {
            if value.trim().parse::<u32>() == Ok(PROTOCOL_VERSION) {
                negotiated.fast = true;
            } else {
                negotiated.warnings.push(format!(
                    "unsupported fast-path version `{value}` (this side speaks {PROTOCOL_VERSION}); \
                     using the plain HKube protocol"
                ));
            }
        }
        negotiated
    }
}

/// `%XX` escapes and `+` (form encoding) decoded; an invalid escape is kept as written and invalid
/// UTF-8 is replaced, so this never fails.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One websocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

impl Frame {
    fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Binary(_) => "binary",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encode
// ---------------------------------------------------------------------------------------------

/// `message` (a [`ToAlgorithm`], [`FromAlgorithm`], [`Envelope`] or any envelope-shaped value) as
/// one frame in `encoding`.
pub fn encode<T: Serialize>(encoding: Encoding, message: &T) -> Result<Frame, Error> {
    let failed = |reason: String| Error::Encode { encoding, reason };
    let value = || serde_json::to_value(message).map_err(|e| failed(e.to_string()));
    match encoding {
        // Straight to text, with no value tree in between: every task's message passes here.
        Encoding::Json => serde_json::to_string(message)
            .map(Frame::Text)
            .map_err(|e| failed(e.to_string())),
        Encoding::Bson => {
            let mut document = Document::new();
            document.insert("data", json_to_bson(&value()?).map_err(failed)?);
            let mut bytes = Vec::new();
            document
                .to_writer(&mut bytes)
                .map_err(|e| failed(e.to_string()))?;
            Ok(Frame::Binary(bytes))
        }
        Encoding::Msgpack => {
            let mut bytes = Vec::new();
            let mut serializer = rmp_serde::Serializer::new(&mut bytes).with_struct_map();
            WithBinary(&value()?)
                .serialize(&mut serializer)
                .map_err(|e| failed(e.to_string()))?;
            Ok(Frame::Binary(bytes))
        }
    }
}

fn json_to_bson(value: &Value) -> Result<Bson, String> {
    Ok(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
            (None, Some(f)) => Bson::Double(f),
            (None, None) => return Err(format!("number {n} has no BSON form")),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => {
            Bson::Array(items.iter().map(json_to_bson).collect::<Result<_, _>>()?)
        }
        Value::Object(object) => match tagged_binary(value) {
            Some(binary) => {
                let (subtype, bytes) = binary?;
                Bson::Binary(Binary {
                    subtype: BinarySubtype::from(subtype),
                    bytes,
                })
            }
            None => {
                let mut document = Document::new();
                for (key, item) in object {
                    document.insert(key.clone(), json_to_bson(item)?);
                }
                Bson::Document(document)
            }
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------------------

/// A frame from the algorithm as a typed message. Unknown commands give
/// [`FromAlgorithm::Unknown`].
pub fn decode_from_algorithm(encoding: Encoding, frame: Frame) -> Result<FromAlgorithm, Error> {
    FromAlgorithm::from_envelope(decode_envelope(encoding, frame)?)
}

/// A frame from the worker as a typed message (for our runtimes and tests).
pub fn decode_to_algorithm(encoding: Encoding, frame: Frame) -> Result<ToAlgorithm, Error> {
    ToAlgorithm::from_envelope(decode_envelope(encoding, frame)?)
}

/// A frame as a raw envelope: checks the frame kind, the encoding, that the envelope is an object
/// and that it has a string `command`.
pub fn decode_envelope(encoding: Encoding, frame: Frame) -> Result<Envelope, Error> {
    let expected = if encoding == Encoding::Json {
        "text"
    } else {
        "binary"
    };
    let malformed = |reason: String| Error::Malformed { encoding, reason };
    let value = match (encoding, frame) {
        (Encoding::Json, Frame::Text(text)) => {
            serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?
        }
        (Encoding::Bson, Frame::Binary(bytes)) => {
            let document = RawDocument::from_bytes(&bytes).map_err(|e| malformed(e.to_string()))?;
            let mut root = document_to_map(document, 0).map_err(malformed)?;
            match root.remove("data") {
                Some(envelope) => envelope,
                None => {
                    return Err(Error::NotAnObject {
                        encoding,
                        found: "a document without the `data` key".to_owned(),
                    })
                }
            }
        }
        (Encoding::Msgpack, Frame::Binary(bytes)) => {
            // A `&[u8]` reader advances over what was read, so what is left is trailing bytes.
            let mut deserializer = rmp_serde::Deserializer::new(bytes.as_slice());
            deserializer.set_max_depth(MAX_DEPTH);
            let AnyValue(value) =
                AnyValue::deserialize(&mut deserializer).map_err(|e| malformed(e.to_string()))?;
            let rest = deserializer.get_ref().len();
            if rest != 0 {
                return Err(malformed(format!(
                    "{rest} trailing bytes after the envelope"
                )));
            }
            value
        }
        (_, frame) => {
            return Err(Error::WrongFrameKind {
                encoding,
                got: frame.kind(),
                expected,
            })
        }
    };
    envelope_from_value(encoding, value)
}

fn envelope_from_value(encoding: Encoding, value: Value) -> Result<Envelope, Error> {
    let mut object = match value {
        Value::Object(object) => object,
        other => {
            return Err(Error::NotAnObject {
                encoding,
                found: describe(&other).to_owned(),
            })
        }
    };
    let command = match object.remove("command") {
        Some(Value::String(command)) => command,
        _ => return Err(Error::MissingCommand { encoding }),
    };
    let present = |value: Option<Value>| value.filter(|v| !v.is_null());
    Ok(Envelope {
        command,
        data: present(object.remove("data")),
        error: present(object.remove("error")),
    })
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn document_to_map(document: &RawDocument, depth: usize) -> Result<Map<String, Value>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH}"));
    }
    let mut object = Map::new();
    for element in document {
        let (key, value) = element.map_err(|e| e.to_string())?;
        object.insert(key.to_owned(), bson_to_json(value, depth + 1)?);
    }
    Ok(object)
}

fn array_to_json(array: &RawArray, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH}"));
    }
    let items = array
        .into_iter()
        .map(|item| bson_to_json(item.map_err(|e| e.to_string())?, depth + 1));
    Ok(Value::Array(items.collect::<Result<_, _>>()?))
}

fn bson_to_json(value: RawBsonRef<'_>, depth: usize) -> Result<Value, String> {
    use serde_json::json;
    Ok(match value {
        RawBsonRef::Double(f) => double(f),
        RawBsonRef::String(s) => Value::String(s.to_owned()),
        RawBsonRef::Array(array) => array_to_json(array, depth)?,
        RawBsonRef::Document(document) => Value::Object(document_to_map(document, depth)?),
        RawBsonRef::Boolean(b) => Value::Bool(b),
        RawBsonRef::Null => Value::Null,
        RawBsonRef::Int32(i) => Value::from(i),
        RawBsonRef::Int64(i) => Value::from(i),
        RawBsonRef::Binary(binary) => binary_with_subtype(u8::from(binary.subtype), binary.bytes),
        RawBsonRef::RegularExpression(regex) => {
            json!({ "$regularExpression": { "pattern": regex.pattern, "options": regex.options } })
        }
        RawBsonRef::JavaScriptCode(code) => json!({ "$code": code }),
        RawBsonRef::JavaScriptCodeWithScope(code) => {
            json!({ "$code": code.code, "$scope": document_to_map(code.scope, depth)? })
        }
        RawBsonRef::Timestamp(ts) => json!({ "$timestamp": { "t": ts.time, "i": ts.increment } }),
        RawBsonRef::ObjectId(oid) => json!({ "$oid": oid.to_hex() }),
        RawBsonRef::DateTime(date) => {
            json!({ "$date": { "$numberLong": date.timestamp_millis().to_string() } })
        }
        RawBsonRef::Symbol(symbol) => json!({ "$symbol": symbol }),
        // Decimal128's Display parses the bit pattern; raw bytes keep this panic-free.
        RawBsonRef::Decimal128(decimal) => {
            let hex: String = decimal.bytes().iter().map(|b| format!("{b:02x}")).collect();
            json!({ "$numberDecimalBytes": hex })
        }
        RawBsonRef::Undefined => json!({ "$undefined": true }),
        RawBsonRef::MaxKey => json!({ "$maxKey": 1 }),
        RawBsonRef::MinKey => json!({ "$minKey": 1 }),
        RawBsonRef::DbPointer(_) => json!({ "$dbPointer": {} }),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::de;
    use serde_json::json;

    use super::*;
    use crate::protocol::messages::tests::{FROM_ALGORITHM_EXAMPLES, TO_ALGORITHM_EXAMPLES};

    fn from_algorithm_samples() -> Vec<FromAlgorithm> {
        FROM_ALGORITHM_EXAMPLES
            .iter()
            .map(|json| serde_json::from_str(json).unwrap())
            .collect()
    }

    fn to_algorithm_samples() -> Vec<ToAlgorithm> {
        TO_ALGORITHM_EXAMPLES
            .iter()
            .map(|json| serde_json::from_str(json).unwrap())
            .collect()
    }

    #[test]
    fn every_message_round_trips_in_every_encoding() {
        for encoding in Encoding::ALL {
            for message in from_algorithm_samples() {
                let frame = encode(encoding, &message).unwrap();
                assert_eq!(
                    matches!(frame, Frame::Text(_)),
                    encoding == Encoding::Json,
                    "{encoding} {message:?}"
                );
                let decoded = decode_from_algorithm(encoding, frame).unwrap();
                assert_eq!(decoded, message, "{encoding}");
            }
            for message in to_algorithm_samples() {
                let frame = encode(encoding, &message).unwrap();
                assert_eq!(
                    decode_to_algorithm(encoding, frame).unwrap(),
                    message,
                    "{encoding}"
                );
            }
        }
    }

    #[test]
    fn json_frames_are_the_envelope_text() {
        let frame = encode(Encoding::Json, &FromAlgorithm::Initialized).unwrap();
        assert_eq!(
            frame,
            Frame::Text(r#"{"command":"initialized"}"#.to_owned())
        );
    }

    #[test]
    fn bson_frames_are_data_documents() {
        for message in to_algorithm_samples() {
            let Frame::Binary(bytes) = encode(Encoding::Bson, &message).unwrap() else {
                panic!("text frame")
            };
            let document = Document::from_reader(bytes.as_slice()).unwrap();
            assert_eq!(document.keys().collect::<Vec<_>>(), ["data"]);
            let envelope = document.get_document("data").unwrap();
            assert_eq!(envelope.get_str("command").unwrap(), message.command());
        }
    }

    #[test]
    fn msgpack_frames_are_bare_maps() {
        for message in from_algorithm_samples() {
            let Frame::Binary(bytes) = encode(Encoding::Msgpack, &message).unwrap() else {
                panic!("text frame")
            };
            // fixmap, map16 or map32.
            assert!(
                matches!(bytes[0], 0x80..=0x8f | 0xde | 0xdf),
                "first byte {:#04x}",
                bytes[0]
            );
            let map: BTreeMap<String, de::IgnoredAny> = rmp_serde::from_slice(&bytes).unwrap();
            assert!(map.contains_key("command"));
            assert!(!map.contains_key("data") || message.command() != "initialized");
        }
    }

    #[test]
    fn bson_binary_survives_decode_and_encode() {
        // Case 3: what a Python or Node wrapper sends for a bytes result under storage v1.
        let payload = vec![0u8, 1, 2, 255, 254];
        let data = bson::doc! { "command": "done", "data": Binary { subtype: BinarySubtype::Generic, bytes: payload.clone() } };
        let mut bytes = Vec::new();
        bson::doc! { "data": data.clone() }
            .to_writer(&mut bytes)
            .unwrap();

        let message = decode_from_algorithm(Encoding::Bson, Frame::Binary(bytes.clone())).unwrap();
        let FromAlgorithm::Done(Some(value)) = &message else {
            panic!("{message:?}")
        };
        assert_eq!(
            value,
            &json!({"$binary": {"base64": "AAEC//4=", "subType": "00"}})
        );
        assert_eq!(as_bytes(value), Some(payload.clone()));

        let Frame::Binary(again) = encode(Encoding::Bson, &message).unwrap() else {
            panic!()
        };
        assert_eq!(
            Document::from_reader(again.as_slice()).unwrap(),
            bson::doc! { "data": data }
        );
        assert_eq!(again, bytes);

        // The same value leaves as msgpack `bin`.
        let Frame::Binary(packed) = encode(Encoding::Msgpack, &message).unwrap() else {
            panic!()
        };
        assert!(packed.windows(7).any(|w| w == [0xc4, 5, 0, 1, 2, 255, 254]));
    }

    #[test]
    fn msgpack_bin_survives_decode_and_encode() {
        // {"command": "done", "data": bin[1,2,3]} written byte by byte, as Python's msgpack does
        // with use_bin_type=True.
        let mut bytes = vec![0x82, 0xa7];
        bytes.extend_from_slice(b"command");
        bytes.push(0xa4);
        bytes.extend_from_slice(b"done");
        bytes.push(0xa4);
        bytes.extend_from_slice(b"data");
        bytes.extend_from_slice(&[0xc4, 3, 1, 2, 3]);
        let message =
            decode_from_algorithm(Encoding::Msgpack, Frame::Binary(bytes.clone())).unwrap();
        assert_eq!(message, FromAlgorithm::Done(Some(binary(&[1, 2, 3]))));
        assert_eq!(
            encode(Encoding::Msgpack, &message).unwrap(),
            Frame::Binary(bytes)
        );
        // Under BSON the same value is a binary element.
        let Frame::Binary(doc) = encode(Encoding::Bson, &message).unwrap() else {
            panic!()
        };
        let doc = Document::from_reader(doc.as_slice()).unwrap();
        let bytes = doc
            .get_document("data")
            .unwrap()
            .get_binary_generic("data")
            .unwrap();
        assert_eq!(bytes, &vec![1, 2, 3]);
    }

    fn bson_frame(document: Document) -> Frame {
        let mut bytes = Vec::new();
        document.to_writer(&mut bytes).unwrap();
        Frame::Binary(bytes)
    }

    fn nested_json(depth: usize) -> String {
        format!(
            r#"{{"command":"done","data":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }

    #[test]
    fn malformed_frames_say_what_is_wrong() {
        let mut deep_bson = bson::doc! {};
        for _ in 0..200 {
            deep_bson = bson::doc! { "a": deep_bson };
        }
        let mut deep_msgpack = vec![0x82, 0xa7];
        deep_msgpack.extend_from_slice(b"command");
        deep_msgpack
            .extend_from_slice(&[0xa4, b'd', b'o', b'n', b'e', 0xa4, b'd', b'a', b't', b'a']);
        deep_msgpack.extend(std::iter::repeat_n(0x91, 200));
        deep_msgpack.push(0xc0);
        let mut trailing = match encode(Encoding::Msgpack, &FromAlgorithm::Alive).unwrap() {
            Frame::Binary(bytes) => bytes,
            Frame::Text(_) => unreachable!(),
        };
        trailing.push(0);

        // (encoding, frame, text the error must contain)
        let cases = [
            (
                Encoding::Json,
                Frame::Binary(b"{}".to_vec()),
                "json peer sent a binary frame; json messages are text frames",
            ),
            (
                Encoding::Bson,
                Frame::Text("{}".into()),
                "bson peer sent a text frame; bson messages are binary frames",
            ),
            (
                Encoding::Msgpack,
                Frame::Text("{}".into()),
                "msgpack peer sent a text frame",
            ),
            (
                Encoding::Json,
                Frame::Text("not json".into()),
                "json frame does not decode: expected ident",
            ),
            (
                Encoding::Json,
                Frame::Text("[1,2]".into()),
                "json frame holds an array where the envelope object was expected",
            ),
            (
                Encoding::Json,
                Frame::Text(r#""done""#.into()),
                "holds a string",
            ),
            (
                Encoding::Json,
                Frame::Text(r#"{"data":1}"#.into()),
                "json envelope has no string `command` field",
            ),
            (
                Encoding::Json,
                Frame::Text(r#"{"command":5}"#.into()),
                "no string `command`",
            ),
            (
                Encoding::Json,
                Frame::Text(nested_json(200)),
                "recursion limit exceeded",
            ),
            (
                Encoding::Bson,
                Frame::Binary(vec![0xde, 0xad, 0xbe, 0xef]),
                "bson frame does not decode: malformed value: \"document too short\"",
            ),
            (
                Encoding::Bson,
                Frame::Binary(vec![12, 0, 0, 0, 0x42, b'x', 0, 1, 2, 3, 4, 0]),
                "bson frame does not decode",
            ),
            (
                Encoding::Bson,
                bson_frame(bson::doc! {"command": "done"}),
                "a document without the `data` key",
            ),
            (
                Encoding::Bson,
                bson_frame(bson::doc! {"data": 5}),
                "bson frame holds a number",
            ),
            (
                Encoding::Bson,
                bson_frame(bson::doc! {"data": {"command": "done", "data": deep_bson}}),
                "nesting deeper than 128",
            ),
            (
                Encoding::Msgpack,
                Frame::Binary(vec![0xc1]),
                "msgpack frame does not decode",
            ),
            (
                Encoding::Msgpack,
                Frame::Binary(vec![]),
                "msgpack frame does not decode",
            ),
            (
                Encoding::Msgpack,
                Frame::Binary(vec![0x92, 1, 2]),
                "msgpack frame holds an array",
            ),
            (
                Encoding::Msgpack,
                Frame::Binary(vec![0x81, 0xa1, b'x', 1]),
                "msgpack envelope has no string `command`",
            ),
            (
                Encoding::Msgpack,
                Frame::Binary(trailing),
                "1 trailing bytes after the envelope",
            ),
            (
                Encoding::Msgpack,
                Frame::Binary(deep_msgpack),
                "depth limit exceeded",
            ),
            (
                Encoding::Json,
                Frame::Text(r#"{"command":"storing","data":{}}"#.into()),
                "invalid `storing` payload: missing field `storageInfo`",
            ),
        ];
        for (encoding, frame, expected) in cases {
            let error = decode_from_algorithm(encoding, frame.clone()).unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{encoding} {frame:?}: got `{error}`, want `{expected}`"
            );
            // The worker-side decoder rejects the same frames (payload checks aside).
            if !expected.contains("payload") {
                assert!(decode_to_algorithm(encoding, frame).is_err());
            }
        }
    }

    #[test]
    fn malformed_tagged_binary_fails_to_encode_as_binary() {
        let message =
            FromAlgorithm::Done(Some(json!({"$binary": {"base64": "***", "subType": "00"}})));
        for encoding in [Encoding::Bson, Encoding::Msgpack] {
            let error = encode(encoding, &message).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!(
                    "cannot encode message as {encoding}: `$binary.base64`"
                )),
                "{error}"
            );
        }
        // JSON has no binary; the object is sent as written.
        assert!(encode(Encoding::Json, &message).is_ok());
    }

    #[test]
    fn values_bson_cannot_hold_fail_cleanly() {
        let message = FromAlgorithm::Done(Some(json!({"a\u{0}b": 1})));
        let error = encode(Encoding::Bson, &message).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot encode message as bson"),
            "{error}"
        );
    }

    #[test]
    fn unknown_commands_decode_in_every_encoding() {
        for encoding in Encoding::ALL {
            let frame =
                encode(encoding, &json!({"command": "fooBar", "data": {"x": [1]}})).unwrap();
            let decoded = decode_from_algorithm(encoding, frame).unwrap();
            assert_eq!(
                decoded,
                FromAlgorithm::Unknown {
                    command: "fooBar".into()
                }
            );
        }
    }

    #[test]
    fn query_string_negotiation() {
        struct Case {
            query: Option<&'static str>,
            storage: StorageMode,
            encoding: Encoding,
            hostname: Option<&'static str>,
            fast: bool,
            warnings: usize,
        }
        let case = |query, storage, encoding, hostname, fast, warnings| Case {
            query,
            storage,
            encoding,
            hostname,
            fast,
            warnings,
        };
        use Encoding::*;
        use StorageMode::*;
        let cases = [
            case(Some("?storage=v3&encoding=bson"), V3, Bson, None, false, 0),
            case(Some("storage=v3&encoding=bson"), V3, Bson, None, false, 0),
            case(None, V1, Json, None, false, 0),
            case(Some(""), V1, Json, None, false, 0),
            case(Some("?"), V1, Json, None, false, 0),
            case(
                Some("encoding=msgpack&storage=v2"),
                V3,
                Msgpack,
                None,
                false,
                0,
            ),
            case(
                Some("?storage=v3&encoding=json&hostname=algo%2Drunner%20pod%2B1"),
                V3,
                Json,
                Some("algo-runner pod+1"),
                false,
                0,
            ),
            case(
                Some("hostname=a+b&encoding=BSON"),
                V1,
                Bson,
                Some("a b"),
                false,
                0,
            ),
            case(Some("encoding=xml&storage=v9"), V1, Json, None, false, 2),
            case(Some("encoding=&storage="), V1, Json, None, false, 0),
            case(
                Some("encoding=msgpack&encoding=bson"),
                V1,
                Msgpack,
                None,
                false,
                0,
            ),
            case(
                Some("storage=v3&encoding=msgpack&fast=1"),
                V3,
                Msgpack,
                None,
                true,
                0,
            ),
            case(Some("fast=2"), V1, Json, None, false, 1),
            case(
                Some("hostname=%zz%&other=1&=&&"),
                V1,
                Json,
                Some("%zz%"),
                false,
                0,
            ),
        ];
        for c in cases {
            let n = Negotiated::from_query(c.query);
            assert_eq!(
                (
                    n.storage,
                    n.encoding,
                    n.hostname.as_deref(),
                    n.fast,
                    n.warnings.len()
                ),
                (c.storage, c.encoding, c.hostname, c.fast, c.warnings),
                "{:?}: {:?}",
                c.query,
                n.warnings
            );
        }
        let n = Negotiated::from_query(Some("encoding=xml"));
        assert_eq!(n.warnings, ["unknown encoding `xml`; using json"]);
    }

    /// Byte strings that look a little like frames: half raw, half with a valid BSON length prefix
    /// and terminator or a msgpack map marker, so the decoders get past their first check.
    fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
        (proptest::collection::vec(any::<u8>(), 0..256), 0u8..3).prop_map(|(mut bytes, shape)| {
            match shape {
                1 if bytes.len() >= 5 => {
                    let len = (bytes.len() as u32).to_le_bytes();
                    bytes[..4].copy_from_slice(&len);
                    if let Some(last) = bytes.last_mut() {
                        *last = 0;
                    }
                }
                2 if !bytes.is_empty() => bytes[0] = 0x80 | (bytes[0] & 0x0f),
                _ => {}
            }
            bytes
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn decoders_never_panic(bytes in frame_bytes()) {
            for encoding in Encoding::ALL {
                let _ = decode_from_algorithm(encoding, Frame::Binary(bytes.clone()));
                let _ = decode_to_algorithm(encoding, Frame::Binary(bytes.clone()));
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let _ = decode_from_algorithm(Encoding::Json, Frame::Text(text.clone()));
            let _ = decode_to_algorithm(Encoding::Json, Frame::Text(text));
        }
    }
}
