//! Bencode, the encoding of rtpengine's ng control protocol: integers
//! `i42e`, byte strings `4:spam`, lists `l…e`, dictionaries `d…e` with
//! byte-string keys in sorted order.

use std::collections::BTreeMap;

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from (key, value) pairs.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// A dictionary entry, when this is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The value as UTF-8 text, when it is a byte string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Value::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// Why a reply could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

/// Decodes one value from the start of `buf`; returns it and the rest.
pub fn decode(buf: &[u8]) -> Result<(Value, &[u8]), DecodeError> {
    decode_depth(buf, 0)
}

const MAX_DEPTH: usize = 32;

fn decode_depth(buf: &[u8], depth: usize) -> Result<(Value, &[u8]), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError("nested too deeply"));
    }
    match buf.first() {
        Some(b'i') => {
            let end = buf
                .iter()
                .position(|b| *b == b'e')
                .ok_or(DecodeError("unterminated integer"))?;
            let n = std::str::from_utf8(&buf[1..end])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(DecodeError("bad integer"))?;
            Ok((Value::Int(n), &buf[end + 1..]))
        }
        Some(b'l') => {
            let mut rest = &buf[1..];
            let mut items = Vec::new();
            while rest.first() != Some(&b'e') {
                let (v, r) = decode_depth(rest, depth + 1)?;
                items.push(v);
                rest = r;
            }
            Ok((Value::List(items), &rest[1..]))
        }
        Some(b'd') => {
            let mut rest = &buf[1..];
            let mut map = BTreeMap::new();
            while rest.first() != Some(&b'e') {
                let (k, r) = decode_depth(rest, depth + 1)?;
                let Value::Bytes(k) = k else {
                    return Err(DecodeError("dictionary key is not a string"));
                };
                let (v, r) = decode_depth(r, depth + 1)?;
                map.insert(k, v);
                rest = r;
            }
            Ok((Value::Dict(map), &rest[1..]))
        }
        Some(b'0'..=b'9') => {
            let colon = buf
                .iter()
                .position(|b| *b == b':')
                .ok_or(DecodeError("string without length"))?;
            let len: usize = std::str::from_utf8(&buf[..colon])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(DecodeError("bad string length"))?;
            let body = buf
                .get(colon + 1..colon + 1 + len)
                .ok_or(DecodeError("string longer than the message"))?;
            Ok((Value::Bytes(body.to_vec()), &buf[colon + 1 + len..]))
        }
        Some(_) => Err(DecodeError("not a bencoded value")),
        None => Err(DecodeError("truncated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_sorted_keys() {
        let v = Value::dict([
            ("sdp", Value::str("v=0\r\n")),
            ("command", Value::str("offer")),
            ("flags", Value::List(vec![Value::str("a"), Value::Int(-3)])),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(
            out,
            b"d7:command5:offer5:flagsl1:ai-3ee3:sdp5:v=0\r\ne".to_vec()
        );
        let (back, rest) = decode(&out).unwrap();
        assert_eq!((back, rest), (v, &b""[..]));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"x",
            b"i12",
            b"5:abc",
            b"d3:abc",
            b"di1ei2ee",
            b"l",
            b"99999999999999999999:x",
            b"ie",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "l".repeat(100);
        assert!(decode(deep.as_bytes()).is_err());
    }
}
