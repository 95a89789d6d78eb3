//! A tiny DER writer: just enough for the hcRole (subjectDirectoryAttributes) and
//! certificatePolicies extension values, which rcgen has no typed support for.

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_UTF8STRING: u8 = 0x0C;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;

/// Context-specific, constructed tag `[n]` (explicit tagging), for n < 31.
pub(crate) const fn ctx(n: u8) -> u8 {
    0xA0 | (n & 0x1F)
}

/// Encodes one TLV with a definite length (short or long form).
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Fits in the short form: checked just above.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// Concatenates already-encoded elements.
pub(crate) fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A DER `SET OF`: elements sorted by their encodings (X.690 11.6).
pub(crate) fn set_of(mut elements: Vec<Vec<u8>>) -> Vec<u8> {
    elements.sort();
    tlv(TAG_SET, &elements.concat())
}

/// Parses a dotted OID such as `1.2.392.100495.1.6.1.1` into its arcs.
pub(crate) fn parse_oid(dotted: &str) -> Option<Vec<u64>> {
    let arcs = dotted
        .split('.')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    let valid = arcs.len() >= 2
        && arcs[0] <= 2
        && (arcs[0] == 2 || arcs[1] < 40)
        && arcs[0]
            .checked_mul(40)
            .and_then(|v| v.checked_add(arcs[1]))
            .is_some();
    valid.then_some(arcs)
}

/// The content octets of an OBJECT IDENTIFIER (without tag and length).
pub(crate) fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a.saturating_mul(40).saturating_add(*b), rest),
        [a] => (a.saturating_mul(40), &[][..]),
        [] => return out,
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut groups = vec![(arc & 0x7F) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push(((v & 0x7F) as u8) | 0x80);
            v >>= 7;
        }
        groups.reverse();
        out.extend_from_slice(&groups);
    }
    out
}

/// Decodes OBJECT IDENTIFIER content octets to dotted form (correct for any first arcs,
/// e.g. 2.999, unlike asn1-rs 0.7). None if malformed or an arc overflows u64.
pub(crate) fn oid_content_to_string(content: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    let mut in_progress = false;
    for b in content {
        if !in_progress && *b == 0x80 {
            return None; // non-minimal encoding
        }
        acc = acc.checked_mul(128)?.checked_add(u64::from(b & 0x7F))?;
        in_progress = b & 0x80 != 0;
        if !in_progress {
            if arcs.is_empty() {
                let (a, b) = match acc {
                    0..=39 => (0, acc),
                    40..=79 => (1, acc - 40),
                    _ => (2, acc - 80),
                };
                arcs.push(a);
                arcs.push(b);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    if in_progress || arcs.is_empty() {
        return None;
    }
    Some(
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// A full OBJECT IDENTIFIER TLV.
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    tlv(TAG_OID, &oid_content(arcs))
}

pub(crate) fn utf8(s: &str) -> Vec<u8> {
    tlv(TAG_UTF8STRING, s.as_bytes())
}

pub(crate) fn sequence(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &cat(parts))
}

pub(crate) fn explicit(n: u8, inner: &[u8]) -> Vec<u8> {
    tlv(ctx(n), inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_encoding() {
        let arcs = parse_oid("1.2.392.100495.1.6.1.1").expect("valid OID");
        assert_eq!(
            oid(&arcs),
            [
                0x06, 0x0A, 0x2A, 0x83, 0x08, 0x86, 0x91, 0x0F, 0x01, 0x06, 0x01, 0x01
            ]
        );
        let arcs = parse_oid("1.0.17090.0.1").expect("valid OID");
        assert_eq!(oid(&arcs), [0x06, 0x06, 0x28, 0x81, 0x85, 0x42, 0x00, 0x01]);
        assert!(parse_oid("1").is_none());
        assert!(parse_oid("1.x").is_none());
        assert!(parse_oid("1.40").is_none());
        assert!(parse_oid("3.1").is_none());
        for dotted in [
            "2.999.392.1.1",
            "1.2.392.100495.1.6.1.1",
            "1.0.17090.0.1",
            "0.9.2342",
        ] {
            let arcs = parse_oid(dotted).expect("valid");
            assert_eq!(
                oid_content_to_string(&oid_content(&arcs)).as_deref(),
                Some(dotted)
            );
        }
        assert_eq!(oid_content_to_string(&[0x88]), None);
        assert_eq!(oid_content_to_string(&[]), None);
    }

    #[test]
    fn long_lengths() {
        let content = vec![0u8; 300];
        let enc = tlv(TAG_SEQUENCE, &content);
        assert_eq!(&enc[..4], &[0x30, 0x82, 0x01, 0x2C]);
        assert_eq!(enc.len(), 304);
        let enc = tlv(TAG_SEQUENCE, &[0u8; 0x80]);
        assert_eq!(&enc[..3], &[0x30, 0x81, 0x80]);
    }
}
