//! Writing the XML we send, in the normal form of Exclusive XML Canonicalization
//! (exc-c14n 1.0): the text we write is byte for byte its own canonical form, so an
//! element's enveloped-signature digest is the SHA-256 of its bytes as written
//! ([`crate::crypto::SigningCredential::sign_enveloped`]) and nothing is parsed or
//! canonicalized again to sign it. What makes the text canonical:
//!
//! - namespace declarations are written by the writer, never by callers: each element
//!   declares the prefixes it visibly uses (its own and its attributes'), unless an open
//!   ancestor declared them already; the one prefix used in content (`xs` in
//!   `xsi:type="xs:string"`) is declared on the element whose `xsi:type` names it, and
//!   signatures list it in `InclusiveNamespaces` ([`INCLUSIVE_PREFIXES`]);
//! - namespace declarations first, sorted by prefix, then attributes sorted by namespace
//!   URI and local name;
//! - empty elements as start and end tag, no XML declaration, no whitespace between
//!   elements;
//! - exc-c14n's escaping: `&`, `<`, `>` and CR in text; `&`, `<`, `"`, TAB, LF and CR in
//!   attribute values; characters XML 1.0 cannot carry become U+FFFD.
//!
//! Every attribute value and every text node is escaped here: samael's serializers write
//! text unescaped (docs/SAML-SAMAEL.md §3.5), so a doctor's name or an SP's echoed value
//! could otherwise inject signed elements.

pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const NS_XS: &str = "http://www.w3.org/2001/XMLSchema";
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// The prefixes used in content rather than in names (`xsi:type="xs:string"`): exc-c14n
/// keeps their declarations only when the signature's transform lists them.
pub const INCLUSIVE_PREFIXES: &str = "xs";

/// The prefixes we write and their namespaces.
const NAMESPACES: &[(&str, &str)] = &[
    ("ds", NS_DS),
    ("ec", NS_EXC_C14N),
    ("md", NS_MD),
    ("saml", NS_SAML),
    ("samlp", NS_SAMLP),
    ("xml", NS_XML),
    ("xs", NS_XS),
    ("xsi", NS_XSI),
];

fn namespace(prefix: &str) -> Option<&'static str> {
    NAMESPACES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, ns)| *ns)
}

fn prefix_of(qname: &str) -> Option<&str> {
    qname.split_once(':').map(|(prefix, _)| prefix)
}

/// `(namespace URI, local name)` of an attribute: unprefixed attributes have no
/// namespace (and sort first).
fn attribute_key(name: &str) -> (&'static str, &str) {
    match name.split_once(':') {
        Some((prefix, local)) => (namespace(prefix).unwrap_or(""), local),
        None => ("", name),
    }
}

/// An XML document under construction; infallible (it writes into a `String`).
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
    /// The prefixes declared by the open elements, outermost first.
    declared: Vec<&'static str>,
    /// For each open element, how many of `declared` it declared.
    open: Vec<usize>,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(4096),
            declared: Vec::with_capacity(8),
            open: Vec::with_capacity(16),
        }
    }

    /// The byte offset the next markup goes to (an element's start or end, a signature's
    /// place).
    pub fn position(&self) -> usize {
        self.out.len()
    }

    /// Notes that the element being started uses `prefix`, to be declared on it unless
    /// an open ancestor did.
    fn uses(&self, prefix: &str, new: &mut Vec<&'static str>) {
        let Some(&(prefix, _)) = NAMESPACES.iter().find(|(p, _)| *p == prefix) else {
            debug_assert!(false, "no namespace for the prefix {prefix}");
            return;
        };
        if prefix != "xml" && !self.declared.contains(&prefix) && !new.contains(&prefix) {
            new.push(prefix);
        }
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        debug_assert!(
            attrs.iter().all(|(k, _)| !k.starts_with("xmlns")),
            "namespace declarations are the writer's"
        );
        let mut new = Vec::new();
        if let Some(prefix) = prefix_of(name) {
            self.uses(prefix, &mut new);
        }
        for (k, v) in attrs {
            if let Some(prefix) = prefix_of(k) {
                self.uses(prefix, &mut new);
            }
            if *k == "xsi:type"
                && let Some(prefix) = prefix_of(v)
            {
                debug_assert!(INCLUSIVE_PREFIXES.split(' ').any(|p| p == prefix));
                self.uses(prefix, &mut new);
            }
        }
        new.sort_unstable();
        self.out.push('<');
        self.out.push_str(name);
        for prefix in &new {
            self.out.push_str(" xmlns:");
            self.out.push_str(prefix);
            self.out.push_str("=\"");
            self.out.push_str(namespace(prefix).unwrap_or_default());
            self.out.push('"');
        }
        let mut sorted: Vec<&(&str, &str)> = attrs.iter().collect();
        sorted.sort_by_key(|(k, _)| attribute_key(k));
        for (k, v) in sorted {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_attribute(&mut self.out, v);
            self.out.push('"');
        }
        self.out.push('>');
        self.open.push(new.len());
        self.declared.extend(new);
    }

    /// `<name attrs…>`
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self
    }

    /// `<name attrs…></name>` (exc-c14n has no empty-element tags).
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.close(name)
    }

    /// `</name>`
    pub fn close(&mut self, name: &str) -> &mut Self {
        let declared = self.open.pop().unwrap_or_default();
        self.declared
            .truncate(self.declared.len().saturating_sub(declared));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// Escaped text.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_text(&mut self.out, text);
        self
    }

    /// `<name attrs…>text</name>`
    pub fn element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.open(name, attrs).text(text).close(name)
    }

    pub fn finish(self) -> String {
        debug_assert!(self.open.is_empty(), "unclosed elements");
        self.out
    }
}

/// Whether XML 1.0 can carry `c` (the `Char` production; Rust has no surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Text content as exc-c14n writes it.
pub(crate) fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// An attribute value (in double quotes) as exc-c14n writes it.
pub(crate) fn escape_attribute(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}

/// xs:dateTime in UTC with second precision, as SAML wants (`2026-11-24T09:00:00Z`).
pub fn instant(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A fresh message ID: an NCName (starts with `_`) with 160 random bits.
pub fn new_id() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped_as_exc_c14n_writes_them() {
        let mut w = XmlWriter::new();
        w.element(
            "a",
            &[("v", "\"><x y='\t\n\r&")],
            "</saml:AttributeValue><saml:Attribute Name=\"role\">&]]>\r\n\t\u{0}\u{1b}\u{FFFF}",
        );
        let xml = w.finish();
        assert_eq!(
            xml,
            "<a v=\"&quot;>&lt;x y='&#x9;&#xA;&#xD;&amp;\">&lt;/saml:AttributeValue&gt;&lt;saml:Attribute Name=\"role\"&gt;&amp;]]&gt;&#xD;\n\t\u{FFFD}\u{FFFD}\u{FFFD}</a>"
        );
    }

    #[test]
    fn namespaces_are_declared_where_first_used_and_attributes_sorted() {
        let mut w = XmlWriter::new();
        w.open("samlp:Response", &[("Version", "2.0"), ("ID", "_1")])
            .element("saml:Issuer", &[], "i")
            .open("saml:Assertion", &[])
            .empty("saml:AttributeValue", &[("xsi:type", "xs:string")])
            .empty("saml:x", &[("xml:lang", "ja"), ("b", "2"), ("a", "1")])
            .close("saml:Assertion")
            .close("samlp:Response");
        assert_eq!(
            w.finish(),
            concat!(
                "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_1\" Version=\"2.0\">",
                // A sibling's declaration is not in scope: the Assertion declares again.
                "<saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">i</saml:Issuer>",
                "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">",
                "<saml:AttributeValue xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"xs:string\"></saml:AttributeValue>",
                // Unqualified attributes first, then by namespace URI; `xml` is never declared.
                "<saml:x a=\"1\" b=\"2\" xml:lang=\"ja\"></saml:x>",
                "</saml:Assertion></samlp:Response>"
            )
        );
    }

    #[test]
    fn positions_are_byte_offsets() {
        let mut w = XmlWriter::new();
        w.element("md:a", &[], "日本");
        let at = w.position();
        w.empty("md:b", &[]);
        let xml = w.finish();
        assert_eq!(
            &xml[at..],
            "<md:b xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\"></md:b>"
        );
    }

    #[test]
    fn instants_are_utc_seconds() {
        let t = time::macros::datetime!(2026-11-24 18:00:01.9 +09:00);
        assert_eq!(instant(t), "2026-11-24T09:00:01Z");
    }

    #[test]
    fn ids_are_ncnames_and_unique() {
        let (a, b) = (new_id(), new_id());
        assert!(a.starts_with('_') && a.len() == 41);
        assert_ne!(a, b);
    }
}
