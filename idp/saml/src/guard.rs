//! Checks on an XML message before any parser sees it (SAML messages never need a DTD):
//! no `<!DOCTYPE`/`<!ENTITY` (XXE, billion laughs), no processing instructions other than
//! the XML declaration, no NUL or other control characters, UTF-8 only, bounded size and
//! nesting depth.

/// The largest message accepted (after inflating, for the Redirect binding).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The deepest element nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Why a message was refused before parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XmlRefusal {
    #[error("the message is too large")]
    TooLarge,
    #[error("the message is not UTF-8")]
    NotUtf8,
    #[error("the message contains a document type declaration or an entity")]
    Dtd,
    #[error("the message contains a processing instruction")]
    ProcessingInstruction,
    #[error("the message contains control characters")]
    ControlCharacter,
    #[error("the message nests elements deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// The largest metadata document accepted (one entity, several certificates).
pub const MAX_METADATA_BYTES: usize = 512 * 1024;

/// Checks a protocol message (at most [`MAX_MESSAGE_BYTES`]) and returns it as text.
pub fn check(bytes: &[u8]) -> Result<&str, XmlRefusal> {
    check_sized(bytes, MAX_MESSAGE_BYTES)
}

/// Checks a document of at most `max` bytes and returns it as text.
pub fn check_sized(bytes: &[u8], max: usize) -> Result<&str, XmlRefusal> {
    if bytes.len() > max {
        return Err(XmlRefusal::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| XmlRefusal::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(XmlRefusal::ControlCharacter);
    }
    let upper = text.to_ascii_uppercase();
    if upper.contains("<!DOCTYPE") || upper.contains("<!ENTITY") {
        return Err(XmlRefusal::Dtd);
    }
    // The XML declaration is the only processing instruction allowed, and only first.
    let body = match text.strip_prefix("<?xml") {
        Some(rest) if rest.starts_with([' ', '\t', '\r', '\n']) => {
            rest.split_once("?>").map_or(rest, |(_, after)| after)
        }
        _ => text,
    };
    if body.contains("<?") {
        return Err(XmlRefusal::ProcessingInstruction);
    }
    check_depth(body)?;
    Ok(text)
}

/// Element depth by a scan of tags (comments and CDATA skipped); a rough bound that stops
/// pathological nesting before a recursive parser runs.
fn check_depth(text: &str) -> Result<(), XmlRefusal> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'<') {
        i += offset;
        let rest = &text[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |e| e + 3);
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            i += rest.find("]]>").map_or(rest.len(), |e| e + 3);
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        if tag.starts_with("</") {
            depth = depth.saturating_sub(1);
        } else if !tag.ends_with("/>") {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(XmlRefusal::TooDeep);
            }
        }
        i += end.max(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_1" Version="2.0" IssueInstant="2026-11-24T00:00:00Z"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">https://sp.example</saml:Issuer><!-- a comment --></samlp:AuthnRequest>"#;

    #[test]
    fn a_plain_request_passes() {
        assert_eq!(check(REQUEST.as_bytes()), Ok(REQUEST));
    }

    #[test]
    fn dtds_entities_and_processing_instructions_are_refused() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert_eq!(check(xxe.as_bytes()), Err(XmlRefusal::Dtd));
        let laughs = r#"<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(check(laughs.as_bytes()), Err(XmlRefusal::Dtd));
        assert_eq!(check(b"<r><!doctype x></r>"), Err(XmlRefusal::Dtd));
        let pi = r#"<?xml version="1.0"?><?xml-stylesheet href="x"?><r/>"#;
        assert_eq!(check(pi.as_bytes()), Err(XmlRefusal::ProcessingInstruction));
    }

    #[test]
    fn size_encoding_controls_and_depth_are_bounded() {
        assert_eq!(
            check(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(XmlRefusal::TooLarge)
        );
        assert_eq!(check(&[0xff, 0xfe, b'<']), Err(XmlRefusal::NotUtf8));
        assert_eq!(check(b"<r>\0</r>"), Err(XmlRefusal::ControlCharacter));
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(check(deep.as_bytes()), Err(XmlRefusal::TooDeep));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(check(ok.as_bytes()).is_ok());
    }
}
