//! Writing the XML we send. Every attribute value and every text node is escaped here:
//! samael's serializers write text unescaped (docs/SAML-SAMAEL.md §3.5), so a doctor's
//! name or an SP's echoed value could otherwise inject signed elements.

use quick_xml::escape::escape;

pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const NS_XS: &str = "http://www.w3.org/2001/XMLSchema";
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// An XML document under construction; infallible (it writes into a `String`).
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(4096),
        }
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            self.out.push_str(&escape(*v));
            self.out.push('"');
        }
    }

    /// `<name attrs…>`
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push('>');
        self
    }

    /// `<name attrs…/>`
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start(name, attrs);
        self.out.push_str("/>");
        self
    }

    /// `</name>`
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
        self
    }

    /// Escaped text.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.out.push_str(&escape(text));
        self
    }

    /// `<name attrs…>text</name>`
    pub fn element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.open(name, attrs).text(text).close(name)
    }

    /// Markup we produced ourselves (a signature template): never input.
    pub fn trusted_markup(&mut self, markup: &str) -> &mut Self {
        self.out.push_str(markup);
        self
    }

    pub fn finish(self) -> String {
        self.out
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
    fn text_and_attributes_are_escaped() {
        let mut w = XmlWriter::new();
        w.element(
            "a",
            &[("v", "\"><x y='")],
            "</saml:AttributeValue><saml:Attribute Name=\"role\">&]]>",
        );
        let xml = w.finish();
        assert_eq!(
            xml,
            "<a v=\"&quot;&gt;&lt;x y=&apos;\">&lt;/saml:AttributeValue&gt;&lt;saml:Attribute Name=&quot;role&quot;&gt;&amp;]]&gt;</a>"
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
