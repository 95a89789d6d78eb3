//! XML for the service provider: the guard every received document passes before any
//! parser (size, UTF-8 only, no DTD or entity declarations, no processing instructions, no
//! control characters), the streaming structure check of a `samlp:Response` that runs
//! before xmlsec sees it (element depth and count, where signatures and the assertion may
//! be, which algorithms and transforms they use, unique IDs), a small namespace-aware tree
//! for the bytes xmlsec verified, and an escaping writer for what the kit sends.

use std::collections::HashSet;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use crate::Error;

pub(crate) const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub(crate) const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(crate) const NS_METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub(crate) const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
/// SOAP 1.1, which the SAML SOAP binding uses.
pub(crate) const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(crate) const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

/// The deepest element nesting accepted in a received document.
pub const MAX_DEPTH: usize = 32;
/// The most elements accepted in a received document.
pub const MAX_ELEMENTS: usize = 4096;

pub(crate) const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub(crate) const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const DIGESTS: [&str; 3] = [
    SHA256,
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
const SIGNATURE_METHODS: [&str; 6] = [
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];

/// Checks a received document before any parser sees it and returns it as text: at most
/// `max` bytes, UTF-8 (an `encoding` declaration must say UTF-8), no NUL or other control
/// characters, no `<!DOCTYPE`/`<!ENTITY` (any case), no processing instruction but the
/// XML declaration.
pub(crate) fn guard(bytes: &[u8], max: usize) -> Result<&str, Error> {
    if bytes.len() > max {
        return Err(Error::SamlResponseTooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Error::SamlXmlRefused("not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(Error::SamlXmlRefused("control characters"));
    }
    let upper = text.to_ascii_uppercase();
    if upper.contains("<!DOCTYPE") || upper.contains("<!ENTITY") {
        return Err(Error::SamlXmlRefused(
            "a document type declaration or an entity",
        ));
    }
    let body = match text.strip_prefix("<?xml") {
        Some(rest) if rest.starts_with([' ', '\t', '\r', '\n']) => {
            let (declaration, after) = rest
                .split_once("?>")
                .ok_or(Error::SamlXmlRefused("an unterminated XML declaration"))?;
            let declaration = declaration.to_ascii_lowercase();
            if let Some(at) = declaration.find("encoding") {
                let value = declaration[at + "encoding".len()..]
                    .trim_start()
                    .trim_start_matches('=')
                    .trim_start()
                    .trim_start_matches(['"', '\'']);
                if !value.starts_with("utf-8") {
                    return Err(Error::SamlXmlRefused("an encoding other than UTF-8"));
                }
            }
            after
        }
        _ => text,
    };
    if body.contains("<?") {
        return Err(Error::SamlXmlRefused("a processing instruction"));
    }
    Ok(text)
}

/// A streaming reader with the depth and element-count limits; text and references are
/// resolved (the five predefined entities and character references only).
struct Limited<'a> {
    reader: NsReader<&'a [u8]>,
    depth: usize,
    elements: usize,
}

/// One event of [`Limited`], with the element's namespace already resolved.
enum Item<'a> {
    Start {
        ns: String,
        element: BytesStart<'a>,
        empty: bool,
    },
    End,
    Text(String),
    Eof,
}

impl<'a> Limited<'a> {
    fn new(xml: &'a str) -> Self {
        Self {
            reader: NsReader::from_reader(xml.as_bytes()),
            depth: 0,
            elements: 0,
        }
    }

    fn start(
        &mut self,
        ns: String,
        element: BytesStart<'a>,
        empty: bool,
    ) -> Result<Item<'a>, Error> {
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(Error::SamlXmlRefused("too many elements"));
        }
        if self.depth + 1 > MAX_DEPTH {
            return Err(Error::SamlXmlRefused("elements nested too deep"));
        }
        if !empty {
            self.depth += 1;
        }
        Ok(Item::Start { ns, element, empty })
    }

    fn next(&mut self) -> Result<Item<'a>, Error> {
        loop {
            let (resolve, event) = self
                .reader
                .read_resolved_event()
                .map_err(|_| Error::SamlMalformed("not well-formed XML"))?;
            return Ok(match event {
                Event::Start(e) => {
                    let ns = namespace(&resolve)?;
                    self.start(ns, e, false)?
                }
                Event::Empty(e) => {
                    let ns = namespace(&resolve)?;
                    self.start(ns, e, true)?
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    Item::End
                }
                Event::Text(t) => Item::Text(
                    t.xml10_content()
                        .map_err(|_| Error::SamlMalformed("not well-formed XML"))?
                        .into_owned(),
                ),
                Event::CData(c) => Item::Text(
                    c.decode()
                        .map_err(|_| Error::SamlMalformed("not well-formed XML"))?
                        .into_owned(),
                ),
                Event::GeneralRef(r) => {
                    if r.is_char_ref() {
                        let c = r
                            .resolve_char_ref()
                            .ok()
                            .flatten()
                            .ok_or(Error::SamlMalformed("a bad character reference"))?;
                        Item::Text(c.to_string())
                    } else {
                        let name = r
                            .decode()
                            .map_err(|_| Error::SamlMalformed("not well-formed XML"))?;
                        let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or(Error::SamlXmlRefused("an entity reference"))?;
                        Item::Text(resolved.to_owned())
                    }
                }
                Event::DocType(_) => {
                    return Err(Error::SamlXmlRefused(
                        "a document type declaration or an entity",
                    ));
                }
                Event::PI(_) => return Err(Error::SamlXmlRefused("a processing instruction")),
                Event::Decl(_) | Event::Comment(_) => continue,
                Event::Eof => Item::Eof,
            });
        }
    }
}

fn namespace(resolve: &ResolveResult<'_>) -> Result<String, Error> {
    match resolve {
        ResolveResult::Bound(ns) => String::from_utf8(ns.as_ref().to_vec())
            .map_err(|_| Error::SamlMalformed("not well-formed XML")),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(_) => Err(Error::SamlMalformed("an undeclared namespace prefix")),
    }
}

/// The value of the unprefixed attribute `name`.
fn attribute(element: &BytesStart<'_>, name: &str) -> Result<Option<String>, Error> {
    for attr in element.attributes() {
        let attr = attr.map_err(|_| Error::SamlMalformed("a malformed attribute"))?;
        if attr.key.prefix().is_none() && attr.key.local_name().as_ref() == name.as_bytes() {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|_| Error::SamlMalformed("a malformed attribute"))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// An element of a parsed document: namespace, local name, unprefixed attributes, child
/// elements and the concatenation of its own text nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) ns: String,
    pub(crate) local: String,
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) children: Vec<Element>,
    pub(crate) text: String,
}

impl Element {
    pub(crate) fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }

    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn children<'s, 'n>(
        &'s self,
        ns: &'n str,
        local: &'n str,
    ) -> impl Iterator<Item = &'s Element> + use<'s, 'n> {
        self.children.iter().filter(move |c| c.is(ns, local))
    }

    pub(crate) fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, local))
    }

    /// The text, trimmed of surrounding XML whitespace.
    pub(crate) fn value(&self) -> &str {
        self.text.trim_matches([' ', '\t', '\r', '\n'])
    }
}

/// Parses a document (already through [`guard`]) into a tree.
pub(crate) fn parse(xml: &str) -> Result<Element, Error> {
    let mut reader = Limited::new(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        match reader.next()? {
            Item::Start { ns, element, empty } => {
                if root.is_some() {
                    return Err(Error::SamlMalformed("content after the root element"));
                }
                let mut attributes = Vec::new();
                for attr in element.attributes() {
                    let attr = attr.map_err(|_| Error::SamlMalformed("a malformed attribute"))?;
                    if attr.key.prefix().is_some() || attr.key.as_ref() == b"xmlns" {
                        continue;
                    }
                    let name = std::str::from_utf8(attr.key.local_name().into_inner())
                        .map_err(|_| Error::SamlMalformed("a malformed attribute"))?
                        .to_owned();
                    let value = attr
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|_| Error::SamlMalformed("a malformed attribute"))?
                        .into_owned();
                    if attributes.iter().any(|(k, _)| *k == name) {
                        return Err(Error::SamlMalformed("a repeated attribute"));
                    }
                    attributes.push((name, value));
                }
                let local = std::str::from_utf8(element.local_name().into_inner())
                    .map_err(|_| Error::SamlMalformed("not well-formed XML"))?
                    .to_owned();
                let node = Element {
                    ns,
                    local,
                    attributes,
                    ..Element::default()
                };
                if empty {
                    close(&mut stack, &mut root, node);
                } else {
                    stack.push(node);
                }
            }
            Item::End => {
                let node = stack
                    .pop()
                    .ok_or(Error::SamlMalformed("not well-formed XML"))?;
                close(&mut stack, &mut root, node);
            }
            Item::Text(text) => match stack.last_mut() {
                Some(open) => open.text.push_str(&text),
                None if text.trim().is_empty() => {}
                None => return Err(Error::SamlMalformed("text outside the root element")),
            },
            Item::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(Error::SamlMalformed("not well-formed XML"));
    }
    root.ok_or(Error::SamlMalformed("no root element"))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, node: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

/// What the structure check found in a `samlp:Response`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) response_id: String,
    pub(crate) response_signed: bool,
    /// The assertion's ID, when there is one.
    pub(crate) assertion_id: Option<String>,
    pub(crate) assertion_signed: bool,
}

/// The open element a signature check needs to know about.
struct Open {
    ns: String,
    local: String,
    id: Option<String>,
}

/// A `ds:Signature` being read.
struct SignatureState {
    /// The ID its reference must name (its parent's).
    parent_id: Option<String>,
    depth: usize,
    references: Vec<Option<String>>,
}

/// Remembers the ID-like attributes of `element`; a value seen before is refused (an ID
/// twice is how a wrapped element is made to answer a reference).
fn collect_ids(element: &BytesStart<'_>, ids: &mut HashSet<String>) -> Result<(), Error> {
    for attr in element.attributes() {
        let attr = attr.map_err(|_| Error::SamlMalformed("a malformed attribute"))?;
        if matches!(
            attr.key.local_name().as_ref(),
            b"ID" | b"Id" | b"id" | b"AssertionID"
        ) {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|_| Error::SamlMalformed("a malformed attribute"))?;
            if !ids.insert(value.into_owned()) {
                return Err(Error::SamlStructure("an ID value is used twice"));
            }
        }
    }
    Ok(())
}

/// An element of the XML Signature namespace other than `Signature` itself: references
/// are collected for the signature being read; transforms, canonicalization, digest and
/// signature methods must be on the allow-lists; `Object`, `Manifest` and
/// `RetrievalMethod` are refused.
fn check_signature_part(
    local: &str,
    element: &BytesStart<'_>,
    signature: Option<&mut SignatureState>,
) -> Result<(), Error> {
    match local {
        "Reference" => match signature {
            Some(s) => s.references.push(attribute(element, "URI")?),
            None => return Err(Error::SamlStructure("a stray Reference")),
        },
        "Transform" => {
            let a = attribute(element, "Algorithm")?;
            if !matches!(a.as_deref(), Some(ENVELOPED | EXC_C14N)) {
                return Err(Error::SamlStructure("a transform that is not allowed"));
            }
        }
        "CanonicalizationMethod" => {
            let a = attribute(element, "Algorithm")?;
            if a.as_deref() != Some(EXC_C14N) {
                return Err(Error::SamlStructure(
                    "a canonicalization other than exclusive c14n",
                ));
            }
        }
        "DigestMethod" => {
            let a = attribute(element, "Algorithm")?;
            if !a.as_deref().is_some_and(|a| DIGESTS.contains(&a)) {
                return Err(Error::SamlSignatureAlgorithm);
            }
        }
        "SignatureMethod" => {
            let a = attribute(element, "Algorithm")?;
            if !a.as_deref().is_some_and(|a| SIGNATURE_METHODS.contains(&a)) {
                return Err(Error::SamlSignatureAlgorithm);
            }
        }
        "Object" | "Manifest" | "RetrievalMethod" => {
            return Err(Error::SamlStructure(
                "a signature with an Object, Manifest or RetrievalMethod",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// At the end tag of the element at `depth`: if it closes the signature being read, that
/// signature must have had exactly one reference, to its parent's ID.
fn end_signature(signature: &mut Option<SignatureState>, depth: usize) -> Result<(), Error> {
    if let Some(s) = signature.as_ref().filter(|s| s.depth == depth) {
        let expected = s.parent_id.as_ref().map(|id| format!("#{id}"));
        match s.references.as_slice() {
            [Some(uri)] if Some(uri) == expected.as_ref() => {}
            _ => {
                return Err(Error::SamlStructure(
                    "a signature must have one reference, to its parent",
                ));
            }
        }
        *signature = None;
    }
    Ok(())
}

/// The structure check of a `samlp:Response` against signature wrapping, before xmlsec:
/// the root is a `samlp:Response` with an ID; at most one `saml:Assertion`, a direct child
/// of the root; no `EncryptedAssertion`; a `ds:Signature` only as a direct child of the
/// root or of that assertion, at most one each, with exactly one `Reference` to its
/// parent's ID, exclusive c14n, only the enveloped-signature and exclusive-c14n transforms,
/// SHA-256/384/512 digests and RSA or ECDSA with them; no `Object`, `Manifest` or
/// `RetrievalMethod`; no ID value twice; bounded depth and element count.
pub(crate) fn check_response_shape(xml: &str) -> Result<Shape, Error> {
    let mut reader = Limited::new(xml);
    let mut stack: Vec<Open> = Vec::new();
    let mut shape = Shape::default();
    let mut ids = HashSet::new();
    let mut assertions = 0usize;
    let mut signature: Option<SignatureState> = None;
    let mut seen_root = false;
    loop {
        match reader.next()? {
            Item::Start { ns, element, empty } => {
                let local = String::from_utf8_lossy(element.local_name().into_inner()).into_owned();
                let depth = stack.len() + 1;
                collect_ids(&element, &mut ids)?;
                let id = attribute(&element, "ID")?;
                if depth == 1 {
                    if seen_root {
                        return Err(Error::SamlMalformed("content after the root element"));
                    }
                    seen_root = true;
                    if !(ns == NS_PROTOCOL && local == "Response") {
                        return Err(Error::SamlStructure("the root is not a samlp:Response"));
                    }
                    shape.response_id = id
                        .clone()
                        .filter(|i| !i.is_empty())
                        .ok_or(Error::SamlStructure("the Response has no ID"))?;
                }
                if ns == NS_ASSERTION && local == "EncryptedAssertion" {
                    return Err(Error::SamlStructure(
                        "encrypted assertions are not accepted",
                    ));
                }
                if ns == NS_ASSERTION && local == "Assertion" {
                    assertions += 1;
                    if assertions > 1 {
                        return Err(Error::SamlAssertionCount);
                    }
                    if depth != 2 {
                        return Err(Error::SamlStructure(
                            "the assertion is not a direct child of the Response",
                        ));
                    }
                    shape.assertion_id = Some(
                        id.clone()
                            .filter(|i| !i.is_empty())
                            .ok_or(Error::SamlStructure("the assertion has no ID"))?,
                    );
                }
                if ns == NS_DSIG {
                    match local.as_str() {
                        "Signature" => {
                            if signature.is_some() {
                                return Err(Error::SamlStructure("a signature inside a signature"));
                            }
                            let parent = stack.last();
                            let slot = match parent {
                                Some(p) if depth == 2 && p.ns == NS_PROTOCOL => {
                                    &mut shape.response_signed
                                }
                                Some(p)
                                    if depth == 3
                                        && p.ns == NS_ASSERTION
                                        && p.local == "Assertion" =>
                                {
                                    &mut shape.assertion_signed
                                }
                                _ => {
                                    return Err(Error::SamlStructure(
                                        "a signature outside the Response and its assertion",
                                    ));
                                }
                            };
                            if *slot {
                                return Err(Error::SamlStructure(
                                    "more than one signature on an element",
                                ));
                            }
                            *slot = true;
                            signature = Some(SignatureState {
                                parent_id: parent.and_then(|p| p.id.clone()),
                                depth,
                                references: Vec::new(),
                            });
                        }
                        _ => check_signature_part(&local, &element, signature.as_mut())?,
                    }
                }
                if empty {
                    if ns == NS_DSIG && local == "Signature" {
                        return Err(Error::SamlStructure("an empty signature"));
                    }
                } else {
                    stack.push(Open { ns, local, id });
                }
            }
            Item::End => {
                end_signature(&mut signature, stack.len())?;
                stack.pop();
            }
            Item::Text(_) => {}
            Item::Eof => break,
        }
    }
    if !seen_root || !stack.is_empty() {
        return Err(Error::SamlMalformed("not well-formed XML"));
    }
    Ok(shape)
}

/// What the structure check found in a SOAP envelope carrying a `samlp:LogoutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogoutShape {
    pub(crate) request_id: String,
    pub(crate) signed: bool,
}

/// The structure check of a SOAP 1.1 envelope carrying an IdP's `samlp:LogoutRequest`
/// (SAML SOAP binding), against signature wrapping, before xmlsec: the root is
/// `soap:Envelope`; it holds an optional empty `soap:Header` (no header block: none is
/// understood, so none may be required) and one `soap:Body`, whose only element is a
/// `samlp:LogoutRequest` with an ID; a `ds:Signature` only as a direct child of that
/// request, at most one, with exactly one `Reference` to the request's ID and the same
/// algorithm and transform allow-lists as a Response's; no assertion anywhere; no ID value
/// twice; bounded depth and element count. Envelope-level refusals are
/// [`Error::SamlSoap`].
pub(crate) fn check_soap_logout_shape(xml: &str) -> Result<LogoutShape, Error> {
    let mut reader = Limited::new(xml);
    let mut stack: Vec<Open> = Vec::new();
    let mut shape = LogoutShape::default();
    let mut ids = HashSet::new();
    let mut signature: Option<SignatureState> = None;
    let (mut seen_root, mut seen_header, mut seen_body, mut seen_request) =
        (false, false, false, false);
    loop {
        match reader.next()? {
            Item::Start { ns, element, empty } => {
                let local = String::from_utf8_lossy(element.local_name().into_inner()).into_owned();
                let depth = stack.len() + 1;
                collect_ids(&element, &mut ids)?;
                let id = attribute(&element, "ID")?;
                let parent = stack.last();
                match depth {
                    1 => {
                        if seen_root {
                            return Err(Error::SamlMalformed("content after the root element"));
                        }
                        seen_root = true;
                        if !(ns == NS_SOAP && local == "Envelope") {
                            return Err(Error::SamlSoap("the root is not a SOAP 1.1 Envelope"));
                        }
                    }
                    2 => match (ns == NS_SOAP, local.as_str()) {
                        (true, "Header") if !seen_header && !seen_body => seen_header = true,
                        (true, "Body") if !seen_body => seen_body = true,
                        _ => {
                            return Err(Error::SamlSoap(
                                "the Envelope holds something other than a Header and a Body",
                            ));
                        }
                    },
                    3 if parent.is_some_and(|p| p.local == "Header") => {
                        return Err(Error::SamlSoap("a SOAP header block"));
                    }
                    3 => {
                        if seen_request {
                            return Err(Error::SamlSoap(
                                "the SOAP Body holds more than one element",
                            ));
                        }
                        seen_request = true;
                        if !(ns == NS_PROTOCOL && local == "LogoutRequest") {
                            return Err(Error::SamlSoap("the SOAP Body holds no LogoutRequest"));
                        }
                        shape.request_id = id
                            .clone()
                            .filter(|i| !i.is_empty())
                            .ok_or(Error::SamlStructure("the LogoutRequest has no ID"))?;
                    }
                    _ => {}
                }
                if ns == NS_ASSERTION
                    && matches!(local.as_str(), "Assertion" | "EncryptedAssertion")
                {
                    return Err(Error::SamlStructure("an assertion in a LogoutRequest"));
                }
                if ns == NS_DSIG {
                    if local == "Signature" {
                        if signature.is_some() {
                            return Err(Error::SamlStructure("a signature inside a signature"));
                        }
                        let on_request = depth == 4
                            && parent
                                .is_some_and(|p| p.ns == NS_PROTOCOL && p.local == "LogoutRequest");
                        if !on_request {
                            return Err(Error::SamlStructure(
                                "a signature outside the LogoutRequest",
                            ));
                        }
                        if shape.signed {
                            return Err(Error::SamlStructure(
                                "more than one signature on an element",
                            ));
                        }
                        shape.signed = true;
                        signature = Some(SignatureState {
                            parent_id: parent.and_then(|p| p.id.clone()),
                            depth,
                            references: Vec::new(),
                        });
                        if empty {
                            return Err(Error::SamlStructure("an empty signature"));
                        }
                    } else {
                        check_signature_part(&local, &element, signature.as_mut())?;
                    }
                }
                if !empty {
                    stack.push(Open { ns, local, id });
                }
            }
            Item::End => {
                end_signature(&mut signature, stack.len())?;
                stack.pop();
            }
            Item::Text(_) => {}
            Item::Eof => break,
        }
    }
    if !seen_root || !stack.is_empty() {
        return Err(Error::SamlMalformed("not well-formed XML"));
    }
    if !seen_request {
        return Err(Error::SamlSoap("the SOAP Body holds no LogoutRequest"));
    }
    Ok(shape)
}

/// A writer for the XML the kit sends: every attribute value and text node is escaped
/// (samael's serializers do not escape text; docs/SAML-SAMAEL.md §3.5).
pub(crate) struct Writer {
    out: String,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self { out: String::new() }
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&escape(v));
            self.out.push('"');
        }
    }

    pub(crate) fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push('>');
        self
    }

    pub(crate) fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push_str("/>");
        self
    }

    pub(crate) fn element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.open(name, attrs);
        self.out.push_str(&escape(text));
        self.close(name)
    }

    pub(crate) fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Escapes text or an attribute value: markup characters, quotes, and CR/LF/TAB in the
/// forms that survive attribute normalization; characters XML 1.0 cannot carry become
/// U+FFFD.
pub(crate) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            c if c.is_control() || matches!(c, '\u{fffe}' | '\u{ffff}') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_refuses_dtds_entities_instructions_and_other_encodings() {
        let max = 64 * 1024;
        assert!(guard(b"<a/>", max).is_ok());
        assert!(guard(br#"<?xml version="1.0" encoding="UTF-8"?><a/>"#, max).is_ok());
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert!(matches!(guard(xxe, max), Err(Error::SamlXmlRefused(_))));
        assert!(matches!(
            guard(b"<r><!doctype x></r>", max),
            Err(Error::SamlXmlRefused(_))
        ));
        assert!(matches!(
            guard(b"<r><!EnTiTy x 'y'></r>", max),
            Err(Error::SamlXmlRefused(_))
        ));
        assert!(matches!(
            guard(
                br#"<?xml version="1.0"?><?xml-stylesheet href="x"?><r/>"#,
                max
            ),
            Err(Error::SamlXmlRefused(_))
        ));
        assert!(matches!(
            guard(br#"<?xml version="1.0" encoding="UTF-16"?><r/>"#, max),
            Err(Error::SamlXmlRefused(_))
        ));
        assert!(matches!(
            guard(&[0xff, 0xfe, b'<', 0], max),
            Err(Error::SamlXmlRefused(_))
        ));
        assert!(matches!(
            guard(b"<r>\0</r>", max),
            Err(Error::SamlXmlRefused(_))
        ));
        assert!(matches!(
            guard(&[b' '; 101], 100),
            Err(Error::SamlResponseTooLarge)
        ));
    }

    #[test]
    fn the_tree_is_namespace_aware_and_resolves_only_predefined_references() {
        let doc = parse(
            r#"<p:a xmlns:p="urn:x" k="1&amp;2"><p:b>x&lt;y<!-- c -->&#x41;<![CDATA[<z>]]></p:b><evil:b xmlns:evil="urn:y">no</evil:b></p:a>"#,
        )
        .expect("parses");
        assert!(doc.is("urn:x", "a"));
        assert_eq!(doc.attr("k"), Some("1&2"));
        assert_eq!(doc.children("urn:x", "b").count(), 1);
        assert_eq!(doc.child("urn:x", "b").map(Element::value), Some("x<yA<z>"));
        assert!(parse("<a>&custom;</a>").is_err());
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("<p:a/>").is_err(), "undeclared prefix");
    }

    #[test]
    fn depth_and_element_count_are_bounded() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(parse(&deep), Err(Error::SamlXmlRefused(_))));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        let deep_empty = "<a>".repeat(MAX_DEPTH) + "<b/>" + &"</a>".repeat(MAX_DEPTH);
        assert!(matches!(parse(&deep_empty), Err(Error::SamlXmlRefused(_))));
        let wide = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        assert!(matches!(parse(&wide), Err(Error::SamlXmlRefused(_))));
    }

    fn signature(reference: &str) -> String {
        format!(
            r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="{reference}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue>AA==</ds:DigestValue></ds:Reference></ds:SignedInfo><ds:SignatureValue>AA==</ds:SignatureValue></ds:Signature>"##
        )
    }

    fn assertion(id: &str, inner: &str) -> String {
        format!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}"><saml:Issuer>idp</saml:Issuer>{inner}</saml:Assertion>"#
        )
    }

    fn response(id: &str, inner: &str) -> String {
        format!(
            r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="{id}"><saml:Issuer xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">idp</saml:Issuer>{inner}</samlp:Response>"#
        )
    }

    #[test]
    fn a_doubly_signed_response_has_the_expected_shape() {
        let xml = response(
            "r1",
            &format!("{}{}", signature("#r1"), assertion("a1", &signature("#a1"))),
        );
        assert_eq!(
            check_response_shape(&xml).expect("shape"),
            Shape {
                response_id: "r1".into(),
                response_signed: true,
                assertion_id: Some("a1".into()),
                assertion_signed: true,
            }
        );
    }

    #[test]
    fn wrapping_shapes_are_refused() {
        let signed = assertion("a1", &signature("#a1"));
        // The signed assertion moved under an extension element, an evil one at the top.
        let moved = response(
            "r1",
            &format!(
                "<samlp:Extensions>{signed}</samlp:Extensions>{}",
                assertion("evil", "")
            ),
        );
        assert!(matches!(
            check_response_shape(&moved),
            Err(Error::SamlStructure(_) | Error::SamlAssertionCount)
        ));
        // Two assertions side by side.
        let two = response("r1", &format!("{}{signed}", assertion("evil", "")));
        assert!(matches!(
            check_response_shape(&two),
            Err(Error::SamlAssertionCount)
        ));
        // A signature pointing elsewhere than its parent.
        let elsewhere = response("r1", &assertion("a1", &signature("#r1")));
        assert!(matches!(
            check_response_shape(&elsewhere),
            Err(Error::SamlStructure(_))
        ));
        // A signature nested inside the assertion's subject.
        let nested = response(
            "r1",
            &assertion(
                "a1",
                &format!("<saml:Subject>{}</saml:Subject>", signature("#a1")),
            ),
        );
        assert!(matches!(
            check_response_shape(&nested),
            Err(Error::SamlStructure(_))
        ));
        // The same ID twice.
        let twice = response("a1", &signed);
        assert!(matches!(
            check_response_shape(&twice),
            Err(Error::SamlStructure(_))
        ));
        // Not a Response at the root.
        assert!(matches!(
            check_response_shape(&signed),
            Err(Error::SamlStructure(_))
        ));
    }

    #[test]
    fn weak_algorithms_and_transforms_are_refused() {
        let sha1 = signature("#a1").replace(
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
        assert!(matches!(
            check_response_shape(&response("r1", &assertion("a1", &sha1))),
            Err(Error::SamlSignatureAlgorithm)
        ));
        let rsa_sha1 = signature("#a1").replace(
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        );
        assert!(matches!(
            check_response_shape(&response("r1", &assertion("a1", &rsa_sha1))),
            Err(Error::SamlSignatureAlgorithm)
        ));
        let xslt = signature("#a1").replace(
            "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
            "http://www.w3.org/TR/1999/REC-xslt-19991116",
        );
        assert!(matches!(
            check_response_shape(&response("r1", &assertion("a1", &xslt))),
            Err(Error::SamlStructure(_))
        ));
    }

    #[test]
    fn the_writer_escapes_text_and_attributes() {
        let mut w = Writer::new();
        w.element("a", &[("k", "\"<&>\n")], "</a><b>&]]>");
        let xml = w.finish();
        assert_eq!(
            xml,
            "<a k=\"&quot;&lt;&amp;&gt;&#10;\">&lt;/a&gt;&lt;b&gt;&amp;]]&gt;</a>"
        );
        let back = parse(&xml).expect("well-formed");
        assert_eq!(back.attr("k"), Some("\"<&>\n"));
        assert_eq!(back.text, "</a><b>&]]>");
    }
}
