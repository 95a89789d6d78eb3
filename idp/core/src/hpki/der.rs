//! A small, strict DER reader for the structures x509-parser has no typed parser for
//! (subjectDirectoryAttributes and hcRole). Every read is bounds-checked; malformed input
//! is an error, never a panic.

/// Why a DER structure could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    #[error("truncated DER")]
    Truncated,
    #[error("indefinite or oversized DER length")]
    BadLength,
    #[error("high-tag-number DER tags are not used in these structures")]
    UnsupportedTag,
    #[error("unexpected DER tag {found:#04x} (expected {expected:#04x})")]
    UnexpectedTag { expected: u8, found: u8 },
    #[error("trailing data after a DER value")]
    TrailingData,
    #[error("invalid OBJECT IDENTIFIER")]
    BadOid,
    #[error("invalid string value")]
    BadString,
}

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;
pub(crate) const OID: u8 = 0x06;
pub(crate) const UTF8_STRING: u8 = 0x0c;
pub(crate) const PRINTABLE_STRING: u8 = 0x13;
pub(crate) const IA5_STRING: u8 = 0x16;

/// Context-specific, constructed tag `[n]`.
pub(crate) const fn context(n: u8) -> u8 {
    0xa0 | n
}

/// A cursor over DER bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Reads one tag-length-value; returns the tag and the value bytes.
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, rest) = self.data.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::UnsupportedTag);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            // 0x80 is the BER indefinite form; more than 4 length bytes is never needed
            // for a certificate extension.
            if count == 0 || count > 4 {
                return Err(DerError::BadLength);
            }
            let (bytes, after) = rest.split_at_checked(count).ok_or(DerError::Truncated)?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let (value, after) = rest.split_at_checked(len).ok_or(DerError::Truncated)?;
        self.data = after;
        Ok((tag, value))
    }

    /// Reads one value that must carry `tag`.
    pub(crate) fn read(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let (found, value) = self.read_any()?;
        if found == tag {
            Ok(value)
        } else {
            Err(DerError::UnexpectedTag {
                expected: tag,
                found,
            })
        }
    }

    /// Requires that nothing is left.
    pub(crate) fn finish(&self) -> Result<(), DerError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// Reads a whole buffer as exactly one value with `tag`.
pub(crate) fn read_single(data: &[u8], tag: u8) -> Result<&[u8], DerError> {
    let mut reader = Reader::new(data);
    let value = reader.read(tag)?;
    reader.finish()?;
    Ok(value)
}

/// Decodes the content octets of an OBJECT IDENTIFIER into dotted form.
pub(crate) fn oid_to_string(content: &[u8]) -> Result<String, DerError> {
    if content.is_empty() || content.last().is_some_and(|b| b & 0x80 != 0) {
        return Err(DerError::BadOid);
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    let mut started = false;
    for &byte in content {
        if !started && byte == 0x80 {
            // A leading 0x80 is a non-minimal encoding.
            return Err(DerError::BadOid);
        }
        started = byte & 0x80 != 0;
        value = value
            .checked_mul(128)
            .and_then(|v| v.checked_add(u64::from(byte & 0x7f)))
            .ok_or(DerError::BadOid)?;
        if byte & 0x80 == 0 {
            arcs.push(value);
            value = 0;
        }
    }
    let mut out = String::new();
    for (i, arc) in arcs.iter().enumerate() {
        if i == 0 {
            let (first, second) = match *arc {
                a if a < 40 => (0, a),
                a if a < 80 => (1, a - 40),
                a => (2, a - 80),
            };
            out.push_str(&format!("{first}.{second}"));
        } else {
            out.push_str(&format!(".{arc}"));
        }
    }
    Ok(out)
}

/// Decodes a directory string value (UTF8String, PrintableString or IA5String).
pub(crate) fn string(tag: u8, content: &[u8]) -> Result<String, DerError> {
    match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => std::str::from_utf8(content)
            .map(str::to_owned)
            .map_err(|_| DerError::BadString),
        found => Err(DerError::UnexpectedTag {
            expected: UTF8_STRING,
            found,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 128));
        let mut reader = Reader::new(&long);
        let (tag, value) = reader.read_any().expect("long form");
        assert_eq!((tag, value.len()), (0x04, 128));
        assert!(reader.is_empty());
    }

    #[test]
    fn refuses_truncation_indefinite_lengths_and_trailing_data() {
        assert_eq!(Reader::new(&[0x30]).read_any(), Err(DerError::Truncated));
        assert_eq!(
            Reader::new(&[0x30, 0x05, 1]).read_any(),
            Err(DerError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x30, 0x80, 0, 0]).read_any(),
            Err(DerError::BadLength)
        );
        assert_eq!(
            Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).read_any(),
            Err(DerError::BadLength)
        );
        assert_eq!(
            read_single(&[0x30, 0x00, 0x00], SEQUENCE),
            Err(DerError::TrailingData)
        );
        assert_eq!(
            Reader::new(&[0x1f, 0x01, 0x00]).read_any(),
            Err(DerError::UnsupportedTag)
        );
    }

    #[test]
    fn decodes_object_identifiers() {
        let hc_actor = [0x28, 0x81, 0x85, 0x42, 0x00, 0x01];
        assert_eq!(oid_to_string(&hc_actor).as_deref(), Ok("1.0.17090.0.1"));
        let scheme = [0x2a, 0x83, 0x08, 0x86, 0x91, 0x0f, 0x01, 0x06, 0x01, 0x01];
        assert_eq!(
            oid_to_string(&scheme).as_deref(),
            Ok("1.2.392.100495.1.6.1.1")
        );
        assert_eq!(oid_to_string(&[]), Err(DerError::BadOid));
        assert_eq!(oid_to_string(&[0x2a, 0x83]), Err(DerError::BadOid));
        assert_eq!(oid_to_string(&[0x2a, 0x80, 0x01]), Err(DerError::BadOid));
        assert_eq!(oid_to_string(&[0xff; 12]), Err(DerError::BadOid));
    }

    #[test]
    fn never_panics_on_arbitrary_prefixes() {
        let sample = [0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x31, 0x82, 0x01];
        for end in 0..=sample.len() {
            let mut reader = Reader::new(&sample[..end]);
            while !reader.is_empty() {
                if reader.read_any().is_err() {
                    break;
                }
            }
        }
    }
}
