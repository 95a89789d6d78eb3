//! The `samlp:Response` of Web Browser SSO (SAML Profiles §4.1.4.2): a signed Assertion
//! (bearer SubjectConfirmation with Recipient, InResponseTo and NotOnOrAfter; Conditions
//! with the SP as Audience; one AuthnStatement with the SessionIndex; the released
//! attributes), inside a Response that is signed too unless the SP is set otherwise.
//! Refusals are Responses with a SAML status and no Assertion, always signed.

use std::time::Duration;

use time::OffsetDateTime;

use crate::attributes::{Attribute, write_statement};
use crate::crypto::{SignError, SigningCredential};
use crate::xml::{XmlWriter, instant, new_id};

/// Status codes (SAML Core §3.2.2.2).
pub mod status {
    pub const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
    pub const REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
    pub const RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
    pub const VERSION_MISMATCH: &str = "urn:oasis:names:tc:SAML:2.0:status:VersionMismatch";
    pub const AUTHN_FAILED: &str = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed";
    pub const INVALID_NAMEID_POLICY: &str =
        "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy";
    pub const NO_AUTHN_CONTEXT: &str = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext";
    pub const NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";
    pub const REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
    pub const REQUEST_UNSUPPORTED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestUnsupported";
    pub const UNSUPPORTED_BINDING: &str = "urn:oasis:names:tc:SAML:2.0:status:UnsupportedBinding";
    pub const PARTIAL_LOGOUT: &str = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout";
}

/// The AuthnContext class of the card login: a smart card whose private key the PIN
/// unlocks, used in TLS client authentication (SAML AuthnContext §3.4.20).
pub const AUTHN_CONTEXT_SMARTCARD_PKI: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI";

const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

/// A SAML status: top-level code, optional second-level code and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamlStatus {
    pub code: &'static str,
    pub sub_code: Option<&'static str>,
    pub message: String,
}

impl SamlStatus {
    pub fn new(code: &'static str, sub_code: Option<&'static str>, message: &str) -> Self {
        Self {
            code,
            sub_code,
            message: message.to_owned(),
        }
    }

    /// The request was wrong (top-level Requester).
    pub fn requester(sub_code: Option<&'static str>, message: &str) -> Self {
        Self::new(status::REQUESTER, sub_code, message)
    }

    /// We failed (top-level Responder).
    pub fn responder(sub_code: Option<&'static str>, message: &str) -> Self {
        Self::new(status::RESPONDER, sub_code, message)
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("samlp:Status", &[]);
        match self.sub_code {
            Some(sub) => {
                w.open("samlp:StatusCode", &[("Value", self.code)])
                    .empty("samlp:StatusCode", &[("Value", sub)])
                    .close("samlp:StatusCode");
            }
            None => {
                w.empty("samlp:StatusCode", &[("Value", self.code)]);
            }
        }
        if !self.message.is_empty() {
            w.element("samlp:StatusMessage", &[], &self.message);
        }
        w.close("samlp:Status");
    }
}

/// Everything a successful Response says.
#[derive(Clone, Debug)]
pub struct Assertion<'a> {
    /// The IdP's entity ID.
    pub issuer: &'a str,
    /// The SP's entity ID (the Audience).
    pub audience: &'a str,
    /// The ACS URL (Destination and Recipient).
    pub acs_url: &'a str,
    /// The AuthnRequest's ID; `None` for an unsolicited response.
    pub in_response_to: Option<&'a str>,
    pub name_id: &'a str,
    pub name_id_format: &'a str,
    /// The session's public ID (`SessionIndex`, used by Single Logout).
    pub session_index: &'a str,
    pub authn_instant: OffsetDateTime,
    /// When the session ends at the latest.
    pub session_not_on_or_after: Option<OffsetDateTime>,
    pub authn_context_class: &'a str,
    pub attributes: &'a [Attribute],
    pub now: OffsetDateTime,
    /// How long the assertion may be presented (SubjectConfirmationData and Conditions
    /// NotOnOrAfter).
    pub lifetime: Duration,
    /// Clock skew allowed to SPs (Conditions NotBefore = now − skew).
    pub skew: Duration,
    pub sign_response: bool,
}

/// Where an element to sign lies in the document being written (see
/// [`SigningCredential::sign_enveloped`]).
pub(crate) struct Signed {
    pub id: String,
    pub start: usize,
    /// Where its signature goes.
    pub slot: usize,
}

impl Signed {
    /// Signs the element, which ends at `end`; returns the inserted length.
    pub(crate) fn sign(
        &self,
        credential: &SigningCredential,
        doc: &mut String,
        end: usize,
    ) -> Result<usize, SignError> {
        credential.sign_enveloped(doc, self.start..end, self.slot, &self.id)
    }
}

/// Writes the Assertion; its signature is to go at the returned slot.
fn write_assertion(w: &mut XmlWriter, a: &Assertion<'_>) -> Signed {
    let id = new_id();
    let start = w.position();
    let now = instant(a.now);
    let not_on_or_after = instant(a.now + a.lifetime);
    w.open(
        "saml:Assertion",
        &[("ID", &id), ("Version", "2.0"), ("IssueInstant", &now)],
    );
    w.element("saml:Issuer", &[], a.issuer);
    let slot = w.position();
    w.open("saml:Subject", &[]);
    let mut name_id_attrs = vec![("Format", a.name_id_format)];
    if a.name_id_format == crate::sp::NAMEID_PERSISTENT {
        name_id_attrs.push(("NameQualifier", a.issuer));
        name_id_attrs.push(("SPNameQualifier", a.audience));
    }
    w.element("saml:NameID", &name_id_attrs, a.name_id);
    w.open("saml:SubjectConfirmation", &[("Method", BEARER)]);
    let mut confirmation = vec![
        ("NotOnOrAfter", not_on_or_after.as_str()),
        ("Recipient", a.acs_url),
    ];
    if let Some(irt) = a.in_response_to {
        confirmation.push(("InResponseTo", irt));
    }
    w.empty("saml:SubjectConfirmationData", &confirmation);
    w.close("saml:SubjectConfirmation").close("saml:Subject");
    let not_before = instant(a.now - a.skew);
    w.open(
        "saml:Conditions",
        &[
            ("NotBefore", &not_before),
            ("NotOnOrAfter", &not_on_or_after),
        ],
    );
    w.open("saml:AudienceRestriction", &[])
        .element("saml:Audience", &[], a.audience)
        .close("saml:AudienceRestriction")
        .close("saml:Conditions");
    let authn_instant = instant(a.authn_instant);
    let session_end = a.session_not_on_or_after.map(instant);
    let mut statement = vec![
        ("AuthnInstant", authn_instant.as_str()),
        ("SessionIndex", a.session_index),
    ];
    if let Some(end) = &session_end {
        statement.push(("SessionNotOnOrAfter", end));
    }
    w.open("saml:AuthnStatement", &statement)
        .open("saml:AuthnContext", &[])
        .element("saml:AuthnContextClassRef", &[], a.authn_context_class)
        .close("saml:AuthnContext")
        .close("saml:AuthnStatement");
    write_statement(w, a.attributes);
    w.close("saml:Assertion");
    Signed { id, start, slot }
}

/// Opens a Response and writes its Issuer; its signature is to go at the returned slot.
fn response_open(
    w: &mut XmlWriter,
    issuer: &str,
    now: OffsetDateTime,
    destination: &str,
    in_response_to: Option<&str>,
) -> Signed {
    let id = new_id();
    let start = w.position();
    let now = instant(now);
    let mut attrs = vec![
        ("ID", id.as_str()),
        ("Version", "2.0"),
        ("IssueInstant", now.as_str()),
        ("Destination", destination),
    ];
    if let Some(irt) = in_response_to {
        attrs.push(("InResponseTo", irt));
    }
    w.open("samlp:Response", &attrs);
    w.element("saml:Issuer", &[], issuer);
    let slot = w.position();
    Signed { id, start, slot }
}

/// A successful Response carrying one signed Assertion.
pub fn success(credential: &SigningCredential, a: &Assertion<'_>) -> Result<String, SignError> {
    let mut w = XmlWriter::new();
    let response = response_open(&mut w, a.issuer, a.now, a.acs_url, a.in_response_to);
    SamlStatus::new(status::SUCCESS, None, "").write(&mut w);
    let assertion = write_assertion(&mut w, a);
    let assertion_end = w.position();
    w.close("samlp:Response");
    let mut xml = w.finish();
    assertion.sign(credential, &mut xml, assertion_end)?;
    if a.sign_response {
        let end = xml.len();
        response.sign(credential, &mut xml, end)?;
    }
    Ok(xml)
}

/// A Response refusing a request: the status, no Assertion, signed.
pub fn refusal(
    credential: &SigningCredential,
    issuer: &str,
    destination: &str,
    in_response_to: Option<&str>,
    refusal: &SamlStatus,
    now: OffsetDateTime,
) -> Result<String, SignError> {
    let mut w = XmlWriter::new();
    let response = response_open(&mut w, issuer, now, destination, in_response_to);
    refusal.write(&mut w);
    w.close("samlp:Response");
    let mut xml = w.finish();
    let end = xml.len();
    response.sign(credential, &mut xml, end)?;
    Ok(xml)
}
