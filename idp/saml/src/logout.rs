//! Single Logout messages (SAML Core §3.7, Profiles §4.4): `LogoutRequest` and
//! `LogoutResponse`, read with a namespace-aware reader (samael's LogoutRequest loses
//! `SessionIndex` and misorders its children, docs/SAML-SAMAEL.md §6) and written here.

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use time::OffsetDateTime;

use crate::crypto::{SignError, SigningCredential};
use crate::response::SamlStatus;
use crate::xml::{NS_SAML, NS_SAMLP, XmlWriter, instant, new_id};

/// The SOAP binding (back-channel logout).
pub const SOAP_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP";
const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// A received LogoutRequest's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogoutRequestIn {
    pub id: String,
    pub version: String,
    pub issuer: String,
    pub destination: Option<String>,
    pub issue_instant: Option<OffsetDateTime>,
    pub not_on_or_after: Option<OffsetDateTime>,
    pub name_id: String,
    pub session_indexes: Vec<String>,
}

/// A received LogoutResponse's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogoutResponseIn {
    pub id: String,
    pub in_response_to: Option<String>,
    pub issuer: String,
    pub destination: Option<String>,
    /// The top-level status code.
    pub status: String,
}

fn parse_instant(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()
}

/// Reads the root's attributes and the texts of the named children (any depth below the
/// root, SAML namespaces only). Returns the root's local name too.
/// Names and values, in document order.
type Pairs = Vec<(String, String)>;

fn read(xml: &str) -> Result<(String, Pairs, Pairs), String> {
    let mut reader = quick_xml::NsReader::from_str(xml);
    let mut root = None;
    let mut root_attrs = Vec::new();
    let mut texts = Vec::new();
    let mut current: Option<String> = None;
    let mut text = String::new();
    let mut depth = 0usize;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        let in_saml = matches!(ns, ResolveResult::Bound(ref n)
            if n.as_ref() == NS_SAML.as_bytes() || n.as_ref() == NS_SAMLP.as_bytes());
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                depth += 1;
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if depth == 1 {
                    if !matches!(ns, ResolveResult::Bound(ref n) if n.as_ref() == NS_SAMLP.as_bytes())
                    {
                        return Err("the root is not a SAML protocol message".into());
                    }
                    for attr in e.attributes() {
                        let attr = attr.map_err(|e| e.to_string())?;
                        if attr.key.prefix().is_some() {
                            continue;
                        }
                        let value = attr
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|e| e.to_string())?;
                        root_attrs.push((
                            String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned(),
                            value.into_owned(),
                        ));
                    }
                    root = Some(local);
                } else if depth == 2 && in_saml {
                    current = Some(local.clone());
                    if local == "Status" {
                        current = None;
                    }
                } else if depth == 3 && in_saml && local == "StatusCode" {
                    for attr in e.attributes().flatten() {
                        if attr.key.local_name().as_ref() == b"Value" {
                            let value = attr
                                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .map_err(|e| e.to_string())?;
                            texts.push(("StatusCode".to_owned(), value.into_owned()));
                        }
                    }
                }
                if empty {
                    depth -= 1;
                    if depth == 1 {
                        current = None;
                    }
                }
            }
            Event::Text(t) if current.is_some() && depth == 2 => {
                text.push_str(&t.xml10_content().map_err(|e| e.to_string())?);
            }
            Event::GeneralRef(r) if current.is_some() && depth == 2 => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let c = match name.as_str() {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    _ => r
                        .resolve_char_ref()
                        .map_err(|e| e.to_string())?
                        .ok_or("an entity reference")?,
                };
                text.push(c);
            }
            Event::End(_) => {
                if depth == 2
                    && let Some(name) = current.take()
                {
                    texts.push((name, text.trim().to_owned()));
                }
                text.clear();
                depth = depth.saturating_sub(1);
                if depth <= 1 {
                    current = None;
                }
            }
            Event::DocType(_) => return Err("a DTD".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((root.ok_or("no root element")?, root_attrs, texts))
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Reads a LogoutRequest (already checked by the XML guard and, when signed, reduced to
/// its signed bytes).
pub fn parse_request(xml: &str) -> Result<LogoutRequestIn, String> {
    let (root, attrs, texts) = read(xml)?;
    if root != "LogoutRequest" {
        return Err("not a LogoutRequest".into());
    }
    Ok(LogoutRequestIn {
        id: get(&attrs, "ID").ok_or("no ID")?.to_owned(),
        version: get(&attrs, "Version").unwrap_or_default().to_owned(),
        issuer: get(&texts, "Issuer").ok_or("no Issuer")?.to_owned(),
        destination: get(&attrs, "Destination").map(str::to_owned),
        issue_instant: get(&attrs, "IssueInstant").and_then(parse_instant),
        not_on_or_after: get(&attrs, "NotOnOrAfter").and_then(parse_instant),
        name_id: get(&texts, "NameID").ok_or("no NameID")?.to_owned(),
        session_indexes: texts
            .iter()
            .filter(|(k, _)| k == "SessionIndex")
            .map(|(_, v)| v.clone())
            .collect(),
    })
}

/// Reads a LogoutResponse.
pub fn parse_response(xml: &str) -> Result<LogoutResponseIn, String> {
    let (root, attrs, texts) = read(xml)?;
    if root != "LogoutResponse" {
        return Err("not a LogoutResponse".into());
    }
    Ok(LogoutResponseIn {
        id: get(&attrs, "ID").ok_or("no ID")?.to_owned(),
        in_response_to: get(&attrs, "InResponseTo").map(str::to_owned),
        issuer: get(&texts, "Issuer").ok_or("no Issuer")?.to_owned(),
        destination: get(&attrs, "Destination").map(str::to_owned),
        status: get(&texts, "StatusCode").unwrap_or_default().to_owned(),
    })
}

/// How a message we write will travel: the Redirect binding signs the query string, the
/// others carry an enveloped signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signing {
    QueryString,
    Enveloped,
}

/// A LogoutRequest from the IdP to an SP.
#[derive(Clone, Debug)]
pub struct LogoutRequestOut<'a> {
    pub issuer: &'a str,
    pub destination: &'a str,
    pub name_id: &'a str,
    pub name_id_format: &'a str,
    pub sp_name_qualifier: &'a str,
    pub session_index: &'a str,
    pub now: OffsetDateTime,
    pub lifetime: Duration,
}

/// Writes a LogoutRequest; returns its ID and XML.
pub fn request(
    credential: &SigningCredential,
    r: &LogoutRequestOut<'_>,
    signing: Signing,
) -> Result<(String, String), SignError> {
    let id = new_id();
    let now = instant(r.now);
    let until = instant(r.now + r.lifetime);
    let mut w = XmlWriter::new();
    w.open(
        "samlp:LogoutRequest",
        &[
            ("ID", &id),
            ("Version", "2.0"),
            ("IssueInstant", &now),
            ("Destination", r.destination),
            ("NotOnOrAfter", &until),
        ],
    );
    w.element("saml:Issuer", &[], r.issuer);
    let slot = w.position();
    let mut name_id_attrs = vec![("Format", r.name_id_format)];
    if r.name_id_format == crate::sp::NAMEID_PERSISTENT {
        name_id_attrs.push(("NameQualifier", r.issuer));
        name_id_attrs.push(("SPNameQualifier", r.sp_name_qualifier));
    }
    w.element("saml:NameID", &name_id_attrs, r.name_id);
    w.element("samlp:SessionIndex", &[], r.session_index);
    w.close("samlp:LogoutRequest");
    let xml = signed(credential, w, slot, &id, signing)?;
    Ok((id, xml))
}

/// Writes a LogoutResponse.
#[allow(clippy::too_many_arguments)]
pub fn response(
    credential: &SigningCredential,
    issuer: &str,
    destination: &str,
    in_response_to: &str,
    status: &SamlStatus,
    now: OffsetDateTime,
    signing: Signing,
) -> Result<String, SignError> {
    let id = new_id();
    let now = instant(now);
    let mut w = XmlWriter::new();
    w.open(
        "samlp:LogoutResponse",
        &[
            ("ID", &id),
            ("Version", "2.0"),
            ("IssueInstant", &now),
            ("Destination", destination),
            ("InResponseTo", in_response_to),
        ],
    );
    w.element("saml:Issuer", &[], issuer);
    let slot = w.position();
    status.write(&mut w);
    w.close("samlp:LogoutResponse");
    signed(credential, w, slot, &id, signing)
}

/// The finished message, with its enveloped signature at `slot` if it is to have one.
fn signed(
    credential: &SigningCredential,
    w: XmlWriter,
    slot: usize,
    id: &str,
    signing: Signing,
) -> Result<String, SignError> {
    let mut xml = w.finish();
    if signing == Signing::Enveloped {
        let end = xml.len();
        credential.sign_enveloped(&mut xml, 0..end, slot, id)?;
    }
    Ok(xml)
}

/// Wraps a message in a SOAP 1.1 envelope (SAML SOAP binding).
pub fn soap_envelope(message: &str) -> String {
    let body = message
        .trim_start()
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>"))
        .map_or(message, |(_, body)| body.trim_start());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{NS_SOAP}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_session_indexes_and_nameid() {
        let xml = r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_l1" Version="2.0" IssueInstant="2026-11-24T09:00:00Z" Destination="https://idp/saml/slo"><saml:Issuer>https://sp</saml:Issuer><saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">abc&amp;</saml:NameID><samlp:SessionIndex>s1</samlp:SessionIndex><samlp:SessionIndex>s2</samlp:SessionIndex></samlp:LogoutRequest>"#;
        let r = parse_request(xml).expect("parses");
        assert_eq!(r.id, "_l1");
        assert_eq!(r.issuer, "https://sp");
        assert_eq!(r.name_id, "abc&");
        assert_eq!(r.session_indexes, ["s1", "s2"]);
        assert_eq!(r.destination.as_deref(), Some("https://idp/saml/slo"));
        // A foreign namespace is not read as SAML.
        let evil = xml.replace(
            "<saml:Issuer>https://sp</saml:Issuer>",
            "<x:Issuer xmlns:x=\"urn:x\">https://sp</x:Issuer>",
        );
        assert!(parse_request(&evil).is_err());
        assert!(parse_response(xml).is_err());
    }

    #[test]
    fn written_messages_read_back() {
        let (key, cert) = SigningCredential::generate_pem("idp", 1).expect("key");
        let cred = SigningCredential::from_pem(&key, &cert).expect("cred");
        let now = OffsetDateTime::now_utc();
        let (id, xml) = request(
            &cred,
            &LogoutRequestOut {
                issuer: "https://idp",
                destination: "https://sp/slo",
                name_id: "n<1>",
                name_id_format: crate::sp::NAMEID_PERSISTENT,
                sp_name_qualifier: "https://sp",
                session_index: "sid",
                now,
                lifetime: Duration::from_secs(60),
            },
            Signing::Enveloped,
        )
        .expect("request");
        let (root_id, signed) =
            crate::crypto::verify_enveloped(&xml, &[cred.certificate_der().to_vec()])
                .expect("verifies");
        assert_eq!(root_id, id);
        let r = parse_request(&signed).expect("parses");
        assert_eq!(
            (r.name_id.as_str(), r.session_indexes.as_slice()),
            ("n<1>", &["sid".to_owned()][..])
        );
        let xml = response(
            &cred,
            "https://idp",
            "https://sp/slo",
            &id,
            &SamlStatus::new(crate::response::status::SUCCESS, None, ""),
            now,
            Signing::QueryString,
        )
        .expect("response");
        let r = parse_response(&xml).expect("parses");
        assert_eq!(r.in_response_to.as_deref(), Some(id.as_str()));
        assert_eq!(r.status, crate::response::status::SUCCESS);
    }
}
