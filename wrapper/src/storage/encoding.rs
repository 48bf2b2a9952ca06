//! Turning a task's output into stored bytes and back: HKube's `STORAGE_ENCODING` codecs
//! (msgpack, BSON, JSON), raw bytes, the `storing` metadata and dot paths into decoded values.
//!
//! Values are `serde_json::Value`, with binary, NaN and the like represented as
//! [`crate::value`] describes; [`Encoding`] lives there and is re-exported here.
//!
//! Pure: values in, bytes out, and the reverse. It never touches files, sockets or the
//! environment, and it never panics on stored bytes, whoever wrote them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::header::{DataType, Header, Protocol};
pub use crate::value::Encoding;
use crate::value::{AnyValue, WithBinary};

/// What a task produced: raw bytes (Python `bytes`, Node `Buffer`, Java `byte[]`) or a value.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredValue {
    /// Stored unencoded, with data type RAW; read back as bytes.
    Raw(Vec<u8>),
    /// Stored encoded, with data type ENCODED.
    Value(Value),
}

/// Why a value could not be encoded or decoded. Paths are added by the caller
/// (`storage::Error`), which knows which object this was.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot encode the value as {encoding}: {message}")]
    Encode { encoding: Encoding, message: String },
    #[error("the payload is not valid {encoding}: {message}")]
    Decode { encoding: Encoding, message: String },
    #[error("header {header} has {what} byte 0x{byte:02x}, which this reader does not know")]
    UnknownHeaderByte {
        header: Header,
        what: &'static str,
        byte: u8,
    },
}

/// Encodes `value` for storage: the header to store with it and the payload. Raw bytes are
/// borrowed, not copied, so a large raw output is never held twice.
pub fn encode(value: &StoredValue, encoding: Encoding) -> Result<(Header, Cow<'_, [u8]>), Error> {
    match value {
        StoredValue::Raw(bytes) => Ok((Header::raw(encoding), Cow::Borrowed(bytes.as_slice()))),
        StoredValue::Value(value) => Ok((
            Header::encoded(encoding),
            Cow::Owned(encode_value(value, encoding)?),
        )),
    }
}

/// The payload of `value` in `encoding`, without a header.
///
/// Under msgpack and BSON every tagged binary object in `value` (see [`crate::value::binary`]),
/// however deeply nested, is written as real binary (msgpack `bin`, BSON generic binary), so
/// bytes read from storage are stored again as bytes; a malformed one is an error. JSON has no
/// binary and writes the tagged object as it is.
pub fn encode_value(value: &Value, encoding: Encoding) -> Result<Vec<u8>, Error> {
    #[derive(Serialize)]
    struct BsonEnvelope<'a> {
        data: WithBinary<'a>,
    }
    let failed = |message: String| Error::Encode { encoding, message };
    match encoding {
        Encoding::Msgpack => {
            rmp_serde::to_vec(&WithBinary(value)).map_err(|e| failed(e.to_string()))
        }
        Encoding::Json => serde_json::to_vec(value).map_err(|e| failed(e.to_string())),
        Encoding::Bson => bson::to_vec(&BsonEnvelope {
            data: WithBinary(value),
        })
        .map_err(|e| failed(e.to_string())),
    }
}

/// Decodes a stored payload.
///
/// With a header, byte `[2]` decides raw or encoded and byte `[3]` picks the codec, whatever
/// `configured` says (the reference's advice; the Java wrapper does this, Python and Node use
/// their configured encoding). Without a header (objects written before headers existed) the
/// payload is decoded with `configured`; if that fails it is returned as raw bytes, as the
/// Python wrapper does, because headerless raw bytes cannot be told apart otherwise.
pub fn decode(
    header: Option<Header>,
    payload: Vec<u8>,
    configured: Encoding,
) -> Result<StoredValue, Error> {
    let Some(header) = header else {
        return Ok(match decode_value(&payload, configured) {
            Ok(value) => StoredValue::Value(value),
            Err(_) => StoredValue::Raw(payload),
        });
    };
    match header.data_type {
        DataType::Raw => Ok(StoredValue::Raw(payload)),
        DataType::Encoded => match header.protocol {
            Protocol::Known(encoding) => decode_value(&payload, encoding).map(StoredValue::Value),
            Protocol::Unknown(byte) => Err(Error::UnknownHeaderByte {
                header,
                what: "protocol",
                byte,
            }),
        },
        DataType::Unknown(byte) => Err(Error::UnknownHeaderByte {
            header,
            what: "data type",
            byte,
        }),
    }
}

/// Decodes a payload (no header) written in `encoding`.
///
/// What JSON has no place for is read by [`crate::value`]'s rules: binary inside msgpack or
/// BSON becomes the tagged binary object, map keys that are not strings become their JSON text,
/// and NaN and ±Infinity become `{"$numberDouble": ...}`.
pub fn decode_value(payload: &[u8], encoding: Encoding) -> Result<Value, Error> {
    #[derive(Deserialize)]
    struct BsonEnvelope {
        data: AnyValue,
    }
    let failed = |message: String| Error::Decode { encoding, message };
    match encoding {
        Encoding::Msgpack => {
            let mut rest = payload;
            let AnyValue(value) =
                AnyValue::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))
                    .map_err(|e| failed(e.to_string()))?;
            if !rest.is_empty() {
                return Err(failed(format!(
                    "{} bytes follow the value at offset {}",
                    rest.len(),
                    payload.len() - rest.len()
                )));
            }
            Ok(value)
        }
        Encoding::Json => serde_json::from_slice(payload).map_err(|e| failed(e.to_string())),
        Encoding::Bson => bson::from_slice::<BsonEnvelope>(payload)
            .map(|envelope| envelope.data.0)
            .map_err(|e| failed(e.to_string())),
    }
}

/// The `storing` metadata for `value`: one entry per save path (`<nodeName>` or
/// `<nodeName>.<dot path>`), typed with Node's `typeof` names (`number`, `string`, `boolean`,
/// `object` — also for `null` and raw bytes —) and `{type: "array", size: n}` for arrays, which
/// is what the pipeline driver needs to fan out wait-batch inputs. A save path that points at
/// nothing gets no entry.
pub fn metadata_for<S: AsRef<str>>(value: &StoredValue, save_paths: &[S]) -> Map<String, Value> {
    let mut metadata = Map::new();
    for save_path in save_paths {
        let save_path = save_path.as_ref();
        let inner_path = save_path.split_once('.').map_or("", |(_node, rest)| rest);
        let entry = match value {
            StoredValue::Raw(_) if inner_path.is_empty() => Some(type_entry("object", None)),
            StoredValue::Raw(_) => None,
            StoredValue::Value(value) => lookup_path(value, inner_path).map(|found| match found {
                Value::Array(items) => type_entry("array", Some(items.len())),
                Value::Bool(_) => type_entry("boolean", None),
                Value::Number(_) => type_entry("number", None),
                Value::String(_) => type_entry("string", None),
                Value::Null | Value::Object(_) => type_entry("object", None),
            }),
        };
        if let Some(entry) = entry {
            metadata.insert(save_path.to_owned(), entry);
        }
    }
    metadata
}

fn type_entry(type_name: &str, size: Option<usize>) -> Value {
    let mut entry = Map::new();
    entry.insert("type".into(), type_name.into());
    if let Some(size) = size {
        entry.insert("size".into(), size.into());
    }
    Value::Object(entry)
}

/// The value at a dot path (`"a.b.0"`): object keys first, then a segment that is a
/// non-negative integer indexes an array. The empty path is the value itself; a missing key or
/// index is `null` (the Python wrapper's behaviour for link paths).
pub fn apply_path(value: &Value, path: &str) -> Value {
    lookup_path(value, path).cloned().unwrap_or(Value::Null)
}

/// Like [`apply_path`], but `None` when the path points at nothing.
pub fn lookup_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(value);
    }
    path.split('.')
        .try_fold(value, |current, segment| match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::binary;
    use serde_json::json;

    fn samples() -> Vec<Value> {
        vec![
            json!(null),
            json!(true),
            json!(0),
            json!(-42),
            json!(u64::MAX),
            json!(1.5),
            json!("text with ünïcode"),
            json!([]),
            json!([1, "two", [3.5], {"four": null}]),
            json!({}),
            json!({"a": {"b": [7]}, "z": 1, "y": 2}),
        ]
    }

    #[test]
    fn every_encoding_round_trips_values() {
        for encoding in Encoding::ALL {
            for value in samples() {
                if encoding == Encoding::Bson && value == json!(u64::MAX) {
                    continue; // BSON has no unsigned 64-bit integers; see the next test.
                }
                let stored = StoredValue::Value(value.clone());
                let (header, payload) = encode(&stored, encoding).unwrap();
                assert_eq!(header, Header::encoded(encoding));
                let decoded = decode(Some(header), payload.into_owned(), encoding).unwrap();
                assert_eq!(decoded, stored, "{encoding}: {value}");
            }
        }
    }

    #[test]
    fn bson_refuses_what_it_cannot_hold() {
        let error = encode_value(&json!(u64::MAX), Encoding::Bson).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot encode the value as bson"),
            "{error}"
        );
    }

    #[test]
    fn payload_shapes_match_hkube() {
        // msgpack: the value itself.
        assert_eq!(
            encode_value(&json!([1, 2]), Encoding::Msgpack).unwrap(),
            [0x92, 1, 2]
        );
        // JSON: text.
        assert_eq!(
            encode_value(&json!({"a": [1]}), Encoding::Json).unwrap(),
            br#"{"a":[1]}"#
        );
        // BSON: the document {data: value}.
        let payload = encode_value(&json!([1, "x"]), Encoding::Bson).unwrap();
        let document = bson::Document::from_reader(&mut payload.as_slice()).unwrap();
        assert_eq!(document.keys().collect::<Vec<_>>(), ["data"]);
        let data = document.get_array("data").unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[1], bson::Bson::String("x".into()));
    }

    #[test]
    fn raw_bytes_are_stored_unencoded() {
        for encoding in Encoding::ALL {
            let raw = StoredValue::Raw(vec![0, 1, 2, 255, b'H', b'K']);
            let (header, payload) = encode(&raw, encoding).unwrap();
            assert_eq!(
                header.to_bytes(),
                [1, 8, 1, header.protocol.to_byte(), 0, 0, b'H', b'K']
            );
            assert_eq!(header.protocol, Protocol::Known(encoding));
            assert!(
                matches!(payload, Cow::Borrowed(_)),
                "raw bytes must not be copied"
            );
            assert_eq!(&*payload, [0, 1, 2, 255, b'H', b'K']);
            assert_eq!(
                decode(Some(header), payload.into_owned(), Encoding::Json).unwrap(),
                raw
            );
        }
    }

    #[test]
    fn header_protocol_wins_over_configuration() {
        let value = json!({"a": [1, 2, 3]});
        for written in Encoding::ALL {
            let payload = encode_value(&value, written).unwrap();
            for configured in Encoding::ALL {
                let decoded =
                    decode(Some(Header::encoded(written)), payload.clone(), configured).unwrap();
                assert_eq!(
                    decoded,
                    StoredValue::Value(value.clone()),
                    "{written}/{configured}"
                );
            }
        }
    }

    #[test]
    fn headerless_objects_use_the_configured_encoding() {
        let value = json!({"legacy": [1, "a"]});
        for encoding in Encoding::ALL {
            let payload = encode_value(&value, encoding).unwrap();
            assert_eq!(
                decode(None, payload, encoding).unwrap(),
                StoredValue::Value(value.clone()),
                "{encoding}"
            );
        }
        // Bytes that do not decode come back raw, as in the Python wrapper.
        let garbage = vec![0xc1, 0xff, 0x00];
        assert_eq!(
            decode(None, garbage.clone(), Encoding::Msgpack).unwrap(),
            StoredValue::Raw(garbage)
        );
    }

    #[test]
    fn bad_payloads_and_headers_are_errors() {
        fn check(header: Header, payload: &[u8], expected: &str) {
            let error = decode(Some(header), payload.to_vec(), Encoding::Msgpack).unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{error} lacks {expected}"
            );
        }
        check(Header::encoded(Encoding::Json), b"{nope", "not valid json");
        check(
            Header::encoded(Encoding::Msgpack),
            &[0xc1],
            "not valid msgpack",
        );
        check(
            Header::encoded(Encoding::Msgpack),
            &[0x01, 0x02],
            "1 bytes follow the value",
        );
        check(
            Header::encoded(Encoding::Bson),
            &[1, 2, 3],
            "not valid bson",
        );
        let no_data = bson::to_vec(&bson::doc! {"other": 1}).unwrap();
        check(
            Header::encoded(Encoding::Bson),
            &no_data,
            "missing field `data`",
        );
        check(
            Header {
                data_type: DataType::Encoded,
                protocol: Protocol::Unknown(9),
            },
            b"",
            "protocol byte 0x09",
        );
        check(
            Header {
                data_type: DataType::Unknown(5),
                protocol: Encoding::Json.into(),
            },
            b"",
            "data type byte 0x05",
        );
    }

    #[test]
    fn foreign_msgpack_and_bson_values_decode() {
        // What the Python wrapper writes for {1: b"\x00\x01", "f": nan} with use_bin_type=True.
        let msgpack = [
            0x82, 0x01, 0xc4, 0x02, 0x00, 0x01, 0xa1, b'f', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            decode_value(&msgpack, Encoding::Msgpack).unwrap(),
            json!({"1": binary(&[0, 1]), "f": {"$numberDouble": "NaN"}})
        );
        // A Node Buffer inside a BSON result.
        let bson = bson::to_vec(&bson::doc! {"data": {"b": bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: vec![9, 8],
        }, "i": 3_i32}})
        .unwrap();
        assert_eq!(
            decode_value(&bson, Encoding::Bson).unwrap(),
            json!({"b": binary(&[9, 8]), "i": 3})
        );
    }

    #[test]
    fn nested_binary_round_trips_as_binary() {
        let value = json!({
            "image": binary(&[0, 1, 2, 255]),
            "parts": [binary(&[]), {"deep": binary(b"HK")}, [1, 2]],
            "n": 1,
        });
        let stored = StoredValue::Value(value.clone());
        for encoding in [Encoding::Msgpack, Encoding::Bson] {
            let (header, payload) = encode(&stored, encoding).unwrap();
            assert_eq!(header, Header::encoded(encoding));
            let decoded = decode(Some(header), payload.into_owned(), encoding).unwrap();
            assert_eq!(decoded, stored, "{encoding}");
        }
        // Real binary on disk, not a document that looks like one.
        let packed = encode_value(&value, Encoding::Msgpack).unwrap();
        assert!(packed.windows(6).any(|w| w == [0xc4, 4, 0, 1, 2, 255]));
        let document = bson::Document::from_reader(
            &mut encode_value(&value, Encoding::Bson).unwrap().as_slice(),
        )
        .unwrap();
        let data = document.get_document("data").unwrap();
        assert_eq!(
            data.get_binary_generic("image").unwrap(),
            &vec![0, 1, 2, 255]
        );
        let part = data.get_array("parts").unwrap()[1].as_document().unwrap();
        assert_eq!(part.get_binary_generic("deep").unwrap(), &b"HK".to_vec());
        // Raw bytes stay raw.
        let raw = StoredValue::Raw(vec![0, 1, 2]);
        let (header, payload) = encode(&raw, Encoding::Msgpack).unwrap();
        assert_eq!(
            decode(Some(header), payload.into_owned(), Encoding::Msgpack).unwrap(),
            raw
        );
    }

    #[test]
    fn malformed_tagged_binary_fails_to_encode_as_binary() {
        let value = json!({"x": {"$binary": {"base64": "***", "subType": "00"}}});
        for encoding in [Encoding::Msgpack, Encoding::Bson] {
            let error = encode_value(&value, encoding).unwrap_err();
            assert!(
                error.to_string().starts_with(&format!(
                    "cannot encode the value as {encoding}: `$binary.base64`"
                )),
                "{error}"
            );
        }
        assert!(encode_value(&value, Encoding::Json).is_ok());
    }

    #[test]
    fn metadata_uses_node_type_names() {
        fn check(value: StoredValue, save_paths: &[&str], expected: Value) {
            assert_eq!(Value::Object(metadata_for(&value, save_paths)), expected);
        }
        let value = |v: Value| StoredValue::Value(v);
        // Case 12: the array and its size.
        check(
            value(json!([1, 2, 3])),
            &["green"],
            json!({"green": {"type": "array", "size": 3}}),
        );
        check(value(json!(5)), &["n"], json!({"n": {"type": "number"}}));
        check(value(json!("s")), &["n"], json!({"n": {"type": "string"}}));
        check(
            value(json!(false)),
            &["n"],
            json!({"n": {"type": "boolean"}}),
        );
        check(value(json!(null)), &["n"], json!({"n": {"type": "object"}}));
        check(
            value(json!({"a": {"b": [1, 2]}, "c": 1})),
            &["n", "n.a", "n.a.b", "n.c", "n.missing"],
            json!({
                "n": {"type": "object"},
                "n.a": {"type": "object"},
                "n.a.b": {"type": "array", "size": 2},
                "n.c": {"type": "number"},
            }),
        );
        check(
            StoredValue::Raw(vec![1, 2]),
            &["n", "n.x"],
            json!({"n": {"type": "object"}}),
        );
        check(value(json!(1)), &[], json!({}));
    }

    #[test]
    fn dot_paths() {
        let root = json!({"a": {"b": [7, {"c": "deep"}]}, "0": "key", "list": ["x", "y"]});
        let cases = [
            ("", root.clone()),
            ("a.b", json!([7, {"c": "deep"}])),
            ("a.b.0", json!(7)),
            ("a.b.1.c", json!("deep")),
            ("0", json!("key")),
            ("list.1", json!("y")),
            ("list.2", json!(null)),
            ("list.-1", json!(null)),
            ("list.x", json!(null)),
            ("a.b.0.deeper", json!(null)),
            ("missing", json!(null)),
        ];
        for (path, expected) in cases {
            assert_eq!(apply_path(&root, path), expected, "path {path:?}");
        }
        assert_eq!(lookup_path(&root, "missing"), None);
    }

    #[test]
    fn encoding_names() {
        for encoding in Encoding::ALL {
            assert_eq!(encoding.name().parse::<Encoding>(), Ok(encoding));
        }
        assert_eq!(
            "xml".parse::<Encoding>(),
            Err("unknown encoding `xml`; expected bson, json or msgpack".to_owned())
        );
    }
}
