//! HKube's 8-byte object header (`@hkube/encoding`, identical in the Python and Java wrappers):
//! `[0x01 version, 0x08 length, data type, protocol, 0x00, 0x00, b'H', b'K']`.
//!
//! A header is recognised by its trailing magic `HK` alone, as every HKube reader does; the
//! other bytes are kept as read, so an unknown data type or protocol survives a round trip and is
//! reported only when someone tries to decode with it. This module never fails: `split` of any
//! buffer yields a header or none.

use std::fmt;

use super::encoding::Encoding;

/// Length of the header in bytes.
pub const HEADER_LEN: usize = 8;
const VERSION: u8 = 0x01;
const MAGIC: [u8; 2] = *b"HK";

/// Byte `[2]`: how the payload is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// The user's raw bytes, stored unencoded (`0x01`).
    Raw,
    /// A value encoded with the header's protocol (`0x02`).
    Encoded,
    /// Any other byte; such objects cannot be decoded.
    Unknown(u8),
}

impl DataType {
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0x01 => DataType::Raw,
            0x02 => DataType::Encoded,
            other => DataType::Unknown(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            DataType::Raw => 0x01,
            DataType::Encoded => 0x02,
            DataType::Unknown(byte) => byte,
        }
    }
}

/// Byte `[3]`: the encoding of the payload (`0x01` BSON, `0x02` JSON, `0x03` msgpack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Known(Encoding),
    Unknown(u8),
}

impl Protocol {
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            0x01 => Protocol::Known(Encoding::Bson),
            0x02 => Protocol::Known(Encoding::Json),
            0x03 => Protocol::Known(Encoding::Msgpack),
            other => Protocol::Unknown(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Protocol::Known(Encoding::Bson) => 0x01,
            Protocol::Known(Encoding::Json) => 0x02,
            Protocol::Known(Encoding::Msgpack) => 0x03,
            Protocol::Unknown(byte) => byte,
        }
    }
}

impl From<Encoding> for Protocol {
    fn from(encoding: Encoding) -> Self {
        Protocol::Known(encoding)
    }
}

/// A parsed header. Bytes `[0]`, `[1]`, `[4]` and `[5]` are not interpreted on read (HKube's
/// readers ignore them too) and are written as `01 08 .. .. 00 00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub data_type: DataType,
    pub protocol: Protocol,
}

impl Header {
    /// The header of an encoded value.
    pub fn encoded(encoding: Encoding) -> Self {
        Header {
            data_type: DataType::Encoded,
            protocol: encoding.into(),
        }
    }

    /// The header of raw bytes. HKube writers put their configured encoding in byte `[3]` even
    /// for raw payloads; so does this one.
    pub fn raw(encoding: Encoding) -> Self {
        Header {
            data_type: DataType::Raw,
            protocol: encoding.into(),
        }
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        [
            VERSION,
            HEADER_LEN as u8,
            self.data_type.to_byte(),
            self.protocol.to_byte(),
            0x00,
            0x00,
            MAGIC[0],
            MAGIC[1],
        ]
    }

    /// The header at the start of `bytes`, if the buffer is long enough and bytes `[6..8]` are
    /// `HK`.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let head = bytes.get(..HEADER_LEN)?;
        if head[6..8] != MAGIC {
            return None;
        }
        Some(Header {
            data_type: DataType::from_byte(head[2]),
            protocol: Protocol::from_byte(head[3]),
        })
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        for (i, byte) in bytes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Splits a stored buffer into its header (when present) and payload.
pub fn split(bytes: &[u8]) -> (Option<Header>, &[u8]) {
    match Header::parse(bytes) {
        Some(header) => (Some(header), &bytes[HEADER_LEN..]),
        None => (None, bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_matches_the_reference_bytes() {
        let cases = [
            (
                Header::encoded(Encoding::Bson),
                [1, 8, 2, 1, 0, 0, b'H', b'K'],
            ),
            (
                Header::encoded(Encoding::Json),
                [1, 8, 2, 2, 0, 0, b'H', b'K'],
            ),
            (
                Header::encoded(Encoding::Msgpack),
                [1, 8, 2, 3, 0, 0, b'H', b'K'],
            ),
            (
                Header::raw(Encoding::Msgpack),
                [1, 8, 1, 3, 0, 0, b'H', b'K'],
            ),
        ];
        for (header, bytes) in cases {
            assert_eq!(header.to_bytes(), bytes, "{header:?}");
            assert_eq!(Header::parse(&bytes), Some(header));
        }
    }

    #[test]
    fn split_detects_by_trailing_magic() {
        fn check(input: &[u8], header: Option<Header>, payload: &[u8]) {
            assert_eq!(split(input), (header, payload), "input {input:?}");
        }
        let msgpack = Header::encoded(Encoding::Msgpack);
        check(
            &[1, 8, 2, 3, 0, 0, b'H', b'K', 0x93],
            Some(msgpack),
            &[0x93],
        );
        check(&[1, 8, 2, 3, 0, 0, b'H', b'K'], Some(msgpack), &[]);
        // Detection looks at the magic only, like HKube's readers.
        check(
            &[9, 9, 1, 2, 7, 7, b'H', b'K', 1],
            Some(Header::raw(Encoding::Json)),
            &[1],
        );
        check(
            &[1, 8, 7, 9, 0, 0, b'H', b'K'],
            Some(Header {
                data_type: DataType::Unknown(7),
                protocol: Protocol::Unknown(9),
            }),
            &[],
        );
        // No magic, or too short: the whole buffer is payload.
        check(
            &[1, 8, 2, 3, 0, 0, b'H', b'X', 5],
            None,
            &[1, 8, 2, 3, 0, 0, b'H', b'X', 5],
        );
        check(b"HK", None, b"HK");
        check(b"{\"a\":1}", None, b"{\"a\":1}");
        check(&[], None, &[]);
    }

    #[test]
    fn unknown_bytes_round_trip() {
        let header = Header {
            data_type: DataType::Unknown(0x7f),
            protocol: Protocol::Unknown(0x42),
        };
        assert_eq!(Header::parse(&header.to_bytes()), Some(header));
        assert_eq!(header.to_string(), "01 08 7f 42 00 00 48 4b");
    }
}
