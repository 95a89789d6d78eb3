//! The shape an enveloped XML signature must have before its cryptography is checked
//! (docs/SAML-SAMAEL.md §1.3): xmlsec verifies the first signature it finds anywhere,
//! while the message's fields are read from the root, so a genuine signed message nested
//! inside a forged one would pass. Here: exactly one `Signature`, a direct child of the
//! root, with exactly one `Reference` whose URI is `#` + the root's `ID`, only the
//! enveloped-signature and exclusive-c14n transforms, SHA-256 or SHA-512 digests, an
//! accepted signature method, and no `ID` value used twice in the document.

use std::collections::HashSet;

use quick_xml::events::{BytesStart, Event};

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const DIGESTS: [&str; 2] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
const SIGNATURE_METHODS: [&str; 3] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
];

/// Why a signed message's shape was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("the message is not well-formed XML")]
    Malformed,
    #[error("the root element has no ID")]
    NoRootId,
    #[error("the message is not signed")]
    Unsigned,
    #[error("the message carries more than one signature")]
    SeveralSignatures,
    #[error("the signature is not a direct child of the root element")]
    MisplacedSignature,
    #[error("the signature must have exactly one reference, to the root element")]
    WrongReference,
    #[error("a transform other than enveloped-signature and exclusive c14n")]
    Transform,
    #[error("the canonicalization method is not exclusive c14n")]
    Canonicalization,
    #[error("the digest or signature algorithm is not accepted")]
    Algorithm,
    #[error("an ID value is used twice")]
    DuplicateId,
}

fn attribute(element: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, ShapeError> {
    for attr in element.attributes() {
        let attr = attr.map_err(|_| ShapeError::Malformed)?;
        if attr.key.local_name().as_ref() == name && attr.key.prefix().is_none() {
            return attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map(|v| Some(v.into_owned()))
                .map_err(|_| ShapeError::Malformed);
        }
    }
    Ok(None)
}

/// Every `ID`-like attribute value (ID, Id, id, AssertionID) of an element.
fn ids(element: &BytesStart<'_>, seen: &mut HashSet<String>) -> Result<(), ShapeError> {
    for attr in element.attributes() {
        let attr = attr.map_err(|_| ShapeError::Malformed)?;
        let local = attr.key.local_name();
        if matches!(local.as_ref(), b"ID" | b"Id" | b"id" | b"AssertionID") {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|_| ShapeError::Malformed)?;
            if !seen.insert(value.into_owned()) {
                return Err(ShapeError::DuplicateId);
            }
        }
    }
    Ok(())
}

/// The algorithm of a `SignedInfo` element, against the accepted ones.
fn check_algorithm(element: &[u8], algorithm: Option<&str>) -> Result<(), ShapeError> {
    let (accepted, refusal) = match element {
        b"Transform" => (
            matches!(algorithm, Some(ENVELOPED | EXC_C14N)),
            ShapeError::Transform,
        ),
        b"CanonicalizationMethod" => (algorithm == Some(EXC_C14N), ShapeError::Canonicalization),
        b"DigestMethod" => (
            algorithm.is_some_and(|a| DIGESTS.contains(&a)),
            ShapeError::Algorithm,
        ),
        _ => (
            algorithm.is_some_and(|a| SIGNATURE_METHODS.contains(&a)),
            ShapeError::Algorithm,
        ),
    };
    if accepted { Ok(()) } else { Err(refusal) }
}

/// Checks the enveloped signature's shape; returns the root's `ID` that it signs.
pub fn check(xml: &str) -> Result<String, ShapeError> {
    let mut reader = quick_xml::NsReader::from_str(xml);
    let mut depth = 0usize;
    let mut root_id = None;
    let mut seen_ids = HashSet::new();
    let mut signatures = 0usize;
    let mut signature_depth = None;
    let mut references = Vec::new();
    loop {
        let (resolve, event) = reader
            .read_resolved_event()
            .map_err(|_| ShapeError::Malformed)?;
        let in_dsig = matches!(
            resolve,
            quick_xml::name::ResolveResult::Bound(ns) if ns.as_ref() == DSIG.as_bytes()
        );
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                depth += 1;
                ids(e, &mut seen_ids)?;
                let local = e.local_name();
                if depth == 1 {
                    root_id = attribute(e, b"ID")?;
                }
                if in_dsig {
                    let algorithm = || attribute(e, b"Algorithm");
                    match local.as_ref() {
                        b"Signature" => {
                            signatures += 1;
                            if signatures > 1 {
                                return Err(ShapeError::SeveralSignatures);
                            }
                            signature_depth = Some(depth);
                        }
                        b"Reference" => references.push(attribute(e, b"URI")?),
                        b"Transform"
                        | b"CanonicalizationMethod"
                        | b"DigestMethod"
                        | b"SignatureMethod" => {
                            check_algorithm(local.as_ref(), algorithm()?.as_deref())?;
                        }
                        _ => {}
                    }
                }
                if empty {
                    depth -= 1;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::DocType(_) => return Err(ShapeError::Malformed),
            Event::Eof => break,
            _ => {}
        }
    }
    let root_id = root_id
        .filter(|id| !id.is_empty())
        .ok_or(ShapeError::NoRootId)?;
    match signature_depth {
        None => return Err(ShapeError::Unsigned),
        Some(2) => {}
        Some(_) => return Err(ShapeError::MisplacedSignature),
    }
    match references.as_slice() {
        [Some(uri)] if *uri == format!("#{root_id}") => Ok(root_id),
        _ => Err(ShapeError::WrongReference),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(reference: &str) -> String {
        format!(
            r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="{reference}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AA==</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AA==</ds:SignatureValue></ds:Signature>"##
        )
    }

    fn request(id: &str, inner: &str) -> String {
        format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" AssertionConsumerServiceURL="https://sp.example/acs"><saml:Issuer>https://sp.example</saml:Issuer>{inner}</samlp:AuthnRequest>"#
        )
    }

    #[test]
    fn a_well_formed_enveloped_signature_passes() {
        let xml = request("_genuine", &signature("#_genuine"));
        assert_eq!(check(&xml), Ok("_genuine".to_owned()));
    }

    #[test]
    fn signature_wrapping_variants_are_refused() {
        let genuine = request("_genuine", &signature("#_genuine"));
        // A genuine signed request nested in a forged one (in Extensions).
        let nested = request(
            "_evil",
            &format!("<samlp:Extensions>{genuine}</samlp:Extensions>"),
        );
        assert_eq!(check(&nested), Err(ShapeError::MisplacedSignature));
        // The forged root points its own signature at the nested genuine element.
        let redirected = request(
            "_evil",
            &format!(
                "{}<samlp:Extensions>{}</samlp:Extensions>",
                signature("#_genuine"),
                request("_genuine", "")
            ),
        );
        assert_eq!(check(&redirected), Err(ShapeError::WrongReference));
        // The same ID twice.
        let twice = request(
            "_genuine",
            &format!(
                "{}<samlp:Extensions>{}</samlp:Extensions>",
                signature("#_genuine"),
                request("_genuine", "")
            ),
        );
        assert_eq!(check(&twice), Err(ShapeError::DuplicateId));
        // Two signatures.
        let two = request("_a", &format!("{}{}", signature("#_a"), signature("#_a")));
        assert_eq!(check(&two), Err(ShapeError::SeveralSignatures));
        // An empty or external reference.
        assert_eq!(
            check(&request("_a", &signature(""))),
            Err(ShapeError::WrongReference)
        );
        assert_eq!(
            check(&request("_a", &signature("http://evil.example/x"))),
            Err(ShapeError::WrongReference)
        );
    }

    #[test]
    fn weak_algorithms_transforms_and_unsigned_messages_are_refused() {
        let sha1 = signature("#_a").replace(
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
        assert_eq!(check(&request("_a", &sha1)), Err(ShapeError::Algorithm));
        let rsa_sha1 = signature("#_a").replace(
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        );
        assert_eq!(check(&request("_a", &rsa_sha1)), Err(ShapeError::Algorithm));
        let xslt = signature("#_a").replace(
            "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
            "http://www.w3.org/TR/1999/REC-xslt-19991116",
        );
        assert_eq!(check(&request("_a", &xslt)), Err(ShapeError::Transform));
        assert_eq!(check(&request("_a", "")), Err(ShapeError::Unsigned));
        assert_eq!(
            check(&request("", &signature("#"))),
            Err(ShapeError::NoRootId)
        );
        assert_eq!(check("<a><b></a>"), Err(ShapeError::Malformed));
    }
}
