//! The one value type of the sidecar and the encodings it travels in.
//!
//! `serde_json::Value` is the value type everywhere: messages on the algorithm socket
//! ([`protocol`](crate::protocol)), task inputs and outputs in [`storage`](crate::storage), and
//! what the orchestrator passes between tasks. msgpack and BSON can hold things JSON cannot; when
//! they are read, each becomes a JSON value by one rule, the same in every module:
//!
//! - **Binary** (msgpack `bin`, BSON binary) becomes the tagged object
//!   `{"$binary": {"base64": "<standard base64>", "subType": "<two hex digits>"}}`, MongoDB's
//!   canonical extended JSON (msgpack `bin` gets subtype `00`). [`binary`] builds it and
//!   [`as_bytes`] reads it. Not an array of numbers: an array of small integers is ordinary user
//!   data and cannot be told apart from bytes, while the tagged object can, so the msgpack and
//!   BSON writers turn it back into real binary and bytes survive decode → encode, also from one
//!   encoding to another. A JSON reader sees the object as is.
//! - **NaN and ±Infinity** have no JSON number; they become `{"$numberDouble": "<text>"}` (`NaN`,
//!   `inf`, `-inf`) rather than `null`, so they are not mistaken for a missing value.
//! - **Map keys that are not strings** (msgpack allows any) become their JSON text: `1` → `"1"`,
//!   `true` → `"true"`, as JavaScript prints them.
//! - **BSON-only types** (ObjectId, dates, regexes, Decimal128, ...; no HKube wrapper sends them)
//!   become extended-JSON-style objects one way only: they are written back as ordinary
//!   documents.
//!
//! This module is pure and never panics on the bytes it is given.

use std::fmt;
use std::str::FromStr;

use bson::spec::BinarySubtype;
use bson::{Binary, Bson};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Number, Value};

const BINARY_TAG: &str = "$binary";

/// How a value is written: on the algorithm socket (the wrapper's `encoding=`) and in storage
/// (`STORAGE_ENCODING`, and the protocol byte of the object header).
///
/// There is deliberately no `Default`: the socket defaults to JSON (HKube's worker) and storage
/// to msgpack (the Python and Java wrappers), so each caller names its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// BSON, which needs a document at the top level: the socket sends binary frames holding
    /// `{data: <envelope>}`, storage writes `{data: <value>}`.
    Bson,
    /// UTF-8 JSON: text frames on the socket, text in storage.
    Json,
    /// msgpack: binary frames holding the bare envelope map on the socket, the value itself in
    /// storage.
    Msgpack,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Bson, Encoding::Json, Encoding::Msgpack];

    /// `bson`, `json` or `msgpack`, ignoring ASCII case and surrounding blanks.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        Encoding::ALL
            .into_iter()
            .find(|encoding| encoding.as_str().eq_ignore_ascii_case(text))
    }

    /// The lowercase name, as in a query string, `STORAGE_ENCODING` or serde.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Bson => "bson",
            Encoding::Json => "json",
            Encoding::Msgpack => "msgpack",
        }
    }

    /// The same as [`as_str`](Self::as_str) (the storage module's earlier name for it).
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = String;

    /// Like [`Encoding::parse`], with an error that names the allowed values.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Encoding::parse(text)
            .ok_or_else(|| format!("unknown encoding `{text}`; expected bson, json or msgpack"))
    }
}

/// The tagged object that stands for binary data (BSON subtype 0, "generic").
pub fn binary(bytes: &[u8]) -> Value {
    binary_with_subtype(0, bytes)
}

/// The tagged object for binary data of any BSON subtype.
pub(crate) fn binary_with_subtype(subtype: u8, bytes: &[u8]) -> Value {
    // `into_relaxed_extjson` of a Binary is exactly the tagged form; it only panics on Decimal128.
    Bson::Binary(Binary {
        subtype: BinarySubtype::from(subtype),
        bytes: bytes.to_vec(),
    })
    .into_relaxed_extjson()
}

/// The bytes of a tagged binary object; `None` when `value` is not one.
pub fn as_bytes(value: &Value) -> Option<Vec<u8>> {
    tagged_binary(value)
        .and_then(Result::ok)
        .map(|(_, bytes)| bytes)
}

/// `None`: not a tagged binary object. `Some(Err)`: it is one, but malformed. `Some(Ok)`: its
/// subtype and bytes.
pub(crate) fn tagged_binary(value: &Value) -> Option<Result<(u8, Vec<u8>), String>> {
    let object = value.as_object()?;
    let inner = match (object.len(), object.get(BINARY_TAG)) {
        (1, Some(Value::Object(inner))) => inner,
        _ => return None,
    };
    let (Some(base64), Some(subtype)) = (inner.get("base64"), inner.get("subType")) else {
        return None;
    };
    Some((|| {
        let base64 = base64.as_str().ok_or("`$binary.base64` is not a string")?;
        let subtype = subtype
            .as_str()
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .ok_or("`$binary.subType` is not a hex byte")?;
        let binary =
            Binary::from_base64(base64, None).map_err(|e| format!("`$binary.base64`: {e}"))?;
        Ok((subtype, binary.bytes))
    })())
}

/// A float as a JSON number, or NaN and ±Infinity as `{"$numberDouble": "<text>"}`.
pub(crate) fn double(v: f64) -> Value {
    Number::from_f64(v).map_or_else(
        || serde_json::json!({ "$numberDouble": v.to_string() }),
        Value::Number,
    )
}

/// Serializes a `Value` into a format that has binary (msgpack, BSON through serde): each tagged
/// binary object is written as bytes (msgpack `bin`, BSON generic binary); everything else as
/// `Value` itself would write it. A malformed tagged object is an error, not a document.
pub(crate) struct WithBinary<'a>(pub &'a Value);

impl Serialize for WithBinary<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&WithBinary(item))?;
                }
                seq.end()
            }
            Value::Object(object) => match tagged_binary(self.0) {
                Some(Ok((_, bytes))) => serializer.serialize_bytes(&bytes),
                Some(Err(reason)) => Err(serde::ser::Error::custom(reason)),
                None => {
                    let mut map = serializer.serialize_map(Some(object.len()))?;
                    for (key, item) in object {
                        map.serialize_entry(key, &WithBinary(item))?;
                    }
                    map.end()
                }
            },
            scalar => scalar.serialize(serializer),
        }
    }
}

/// A `Value` read from any self-describing format (msgpack, BSON through serde), accepting what
/// JSON lacks by the rules in the [module docs](self) instead of failing.
pub(crate) struct AnyValue(pub Value);

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyValueVisitor).map(AnyValue)
    }
}

struct AnyValueVisitor;

impl<'de> Visitor<'de> for AnyValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(double(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(binary(v))
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    /// msgpack `ext` values arrive as a newtype holding `(type, bytes)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The size hint comes from the input; cap it so a lying length cannot reserve gigabytes.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(AnyValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(AnyValue(key)) = map.next_key()? {
            let key = match key {
                Value::String(key) => key,
                other => other.to_string(),
            };
            let AnyValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn encoding_names() {
        // (text, what parse gives)
        let cases = [
            ("bson", Some(Encoding::Bson)),
            ("json", Some(Encoding::Json)),
            ("msgpack", Some(Encoding::Msgpack)),
            (" MsgPack ", Some(Encoding::Msgpack)),
            ("JSON", Some(Encoding::Json)),
            ("xml", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Encoding::parse(text), expected, "{text:?}");
            assert_eq!(text.parse::<Encoding>().ok(), expected, "{text:?}");
        }
        assert_eq!(
            "xml".parse::<Encoding>(),
            Err("unknown encoding `xml`; expected bson, json or msgpack".to_owned())
        );
        for encoding in Encoding::ALL {
            assert_eq!(encoding.to_string(), encoding.as_str());
            assert_eq!(encoding.name(), encoding.as_str());
            let quoted = serde_json::to_string(&encoding).unwrap();
            assert_eq!(quoted, format!("\"{encoding}\""));
            assert_eq!(serde_json::from_str::<Encoding>(&quoted).unwrap(), encoding);
        }
    }

    #[test]
    fn binary_is_the_tagged_object() {
        let tagged = binary(&[0, 1, 2, 255, 254]);
        assert_eq!(
            tagged,
            json!({"$binary": {"base64": "AAEC//4=", "subType": "00"}})
        );
        assert_eq!(as_bytes(&tagged), Some(vec![0, 1, 2, 255, 254]));
        // Look-alikes are user data, not binary.
        for other in [
            json!([0, 1, 2]),
            json!({"$binary": "AAEC"}),
            json!({"$binary": {"base64": "AAEC", "subType": "00"}, "x": 1}),
            json!({"$binary": {"base64": "***", "subType": "00"}}),
        ] {
            assert_eq!(as_bytes(&other), None, "{other}");
        }
    }

    #[test]
    fn msgpack_reads_into_json_by_the_rules() {
        // {1: bin[0, 1], "f": NaN, "i": -inf, true: [ext 5 [7]]}
        let mut msgpack = vec![0x84, 0x01, 0xc4, 0x02, 0x00, 0x01];
        msgpack.extend_from_slice(&[0xa1, b'f', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]);
        msgpack.extend_from_slice(&[0xa1, b'i', 0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0]);
        msgpack.extend_from_slice(&[0xc3, 0xd4, 0x05, 0x07]);
        let AnyValue(value) = rmp_serde::from_slice(&msgpack).unwrap();
        assert_eq!(
            value,
            json!({
                "1": binary(&[0, 1]),
                "f": {"$numberDouble": "NaN"},
                "i": {"$numberDouble": "-inf"},
                "true": [5, binary(&[7])],
            })
        );
    }

    #[test]
    fn tagged_binary_is_written_as_binary() {
        let value = json!({"b": binary(&[1, 2, 3]), "list": [binary(&[])]});
        let packed = rmp_serde::to_vec(&WithBinary(&value)).unwrap();
        assert!(packed.windows(5).any(|w| w == [0xc4, 3, 1, 2, 3]));
        let AnyValue(again) = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(again, value);

        let malformed = json!({"$binary": {"base64": "***", "subType": "00"}});
        let error = rmp_serde::to_vec(&WithBinary(&malformed)).unwrap_err();
        assert!(error.to_string().starts_with("`$binary.base64`"), "{error}");
    }
}
