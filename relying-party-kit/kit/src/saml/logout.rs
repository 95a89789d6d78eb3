//! IdP-initiated Single Logout over the SOAP binding (SAML Core §3.7, Bindings §3.2,
//! Profiles §4.4.3.2): the IdP posts a signed `samlp:LogoutRequest` in a SOAP 1.1 envelope
//! to the SP's SOAP SingleLogoutService when the doctor's IdP session ends elsewhere (a
//! logout at the IdP or at another SP); the SP ends the local sessions it names and answers
//! with a `samlp:LogoutResponse` in the HTTP response. Checked, in this order, each refusal
//! its own error:
//! 1. size cap ([`MAX_SOAP_LOGOUT_BYTES`]) and the XML guard;
//! 2. the structure check against signature wrapping: a SOAP 1.1 envelope whose Body holds
//!    one `samlp:LogoutRequest` with an ID, signed by one enveloped signature that is its
//!    direct child and references its ID (no signature anywhere else, no header block);
//! 3. the signature, verified by samael/xmlsec with the IdP's configured certificates only
//!    (never `KeyInfo`), SHA-256 or stronger, `PreDigest`: only the signed bytes are read,
//!    and their root must be the LogoutRequest with the ID the structure check saw;
//! 4. `Version` 2.0, `Issuer` = the IdP, `Destination` (if present) = our SOAP SLO URL,
//!    `IssueInstant` neither in the future nor older than `max_logout_age`, `NotOnOrAfter`
//!    (if present) not passed, all with `clock_skew` against the SP's clock; a `NameID`
//!    whose qualifiers, if present, name the IdP and this SP;
//! 5. the request ID in the replay cache, last, under its own key space.

use std::fmt;

use openidconnect::SubjectIdentifier;
use time::OffsetDateTime;

use super::response::{ReplayCheck, issuer_ok, signed_by_idp, time_attr};
use super::xml::{self, NS_ASSERTION, NS_PROTOCOL, NS_SOAP, Writer};
use super::{
    PROTOCOL, STATUS_REQUEST_DENIED, STATUS_REQUESTER, STATUS_RESPONDER, STATUS_SUCCESS,
    SamlNameId, SamlServiceProvider, instant, new_id,
};
use crate::{Error, LogoutNotice};

/// The largest SOAP logout request read (the IdP's are a few KiB).
pub const MAX_SOAP_LOGOUT_BYTES: usize = 64 * 1024;

/// A LogoutRequest from the IdP that passed every check: end the local sessions it names
/// ([`Self::notices`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct SamlLogoutRequest {
    /// The request's ID (the LogoutResponse's `InResponseTo`).
    pub id: String,
    pub name_id: SamlNameId,
    /// The `SessionIndex`es: the IdP sessions that ended. None: every session of the
    /// NameID.
    pub session_indexes: Vec<String>,
    pub issue_instant: OffsetDateTime,
    pub not_on_or_after: Option<OffsetDateTime>,
}

impl fmt::Debug for SamlLogoutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlLogoutRequest")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SamlLogoutRequest {
    /// What to hand to [`crate::SessionStore::remove_named`]: the sessions whose subject is
    /// the NameID and whose `sid` is one of the SessionIndexes (the web integration keeps a
    /// SAML login's SessionIndex as its session's `sid`), or every session of the NameID
    /// when the request names no SessionIndex.
    pub fn notices(&self) -> Vec<LogoutNotice> {
        let subject = Some(SubjectIdentifier::new(self.name_id.value.clone()));
        if self.session_indexes.is_empty() {
            return vec![LogoutNotice { subject, sid: None }];
        }
        self.session_indexes
            .iter()
            .map(|index| LogoutNotice {
                subject: subject.clone(),
                sid: Some(index.clone()),
            })
            .collect()
    }
}

/// How the SP answers a SOAP LogoutRequest ([`SamlServiceProvider::soap_logout_response`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SamlLogoutStatus {
    /// `Success`: the sessions named are gone.
    Success,
    /// `Requester` / `RequestDenied`: the request did not verify (nothing ended).
    Refused,
    /// `Responder`: the replay cache or the session store failed.
    Unavailable,
}

/// Steps 1–4.
fn validate(
    sp: &SamlServiceProvider,
    body: &[u8],
) -> Result<(SamlLogoutRequest, ReplayCheck), Error> {
    let soap_url = sp
        .config
        .soap_slo_url
        .as_deref()
        .ok_or_else(|| Error::Config("no SOAP SLO URL is configured".into()))?;
    let now = sp.clock.now();
    let skew = time::Duration::try_from(sp.config.clock_skew)
        .map_err(|_| Error::Config("the clock skew is out of range".into()))?;
    let max_age = time::Duration::try_from(sp.config.max_logout_age)
        .map_err(|_| Error::Config("the logout age is out of range".into()))?;
    let idp = sp.idp.entity_id.as_str();

    let text = xml::guard(body, MAX_SOAP_LOGOUT_BYTES)?;
    let shape = xml::check_soap_logout_shape(text)?;
    if !shape.signed {
        return Err(Error::SamlUnsigned);
    }
    // Only what xmlsec digested is read, and it must be the request the check saw.
    let request = signed_by_idp(sp, text)?;
    if !request.is(NS_PROTOCOL, "LogoutRequest") || request.attr("ID") != Some(&shape.request_id) {
        return Err(Error::SamlStructure(
            "the signed element is not the LogoutRequest",
        ));
    }

    if request.attr("Version") != Some("2.0") {
        return Err(Error::SamlMalformed(
            "the LogoutRequest's version is not 2.0",
        ));
    }
    match request.child(NS_ASSERTION, "Issuer") {
        Some(issuer) if issuer_ok(issuer, idp) => {}
        _ => return Err(Error::SamlIssuer),
    }
    if request.attr("Destination").is_some_and(|d| d != soap_url) {
        return Err(Error::SamlDestination);
    }
    let issued = time_attr(&request, "IssueInstant")?.ok_or(Error::SamlMalformed(
        "the LogoutRequest has no IssueInstant",
    ))?;
    if issued > now + skew {
        return Err(Error::SamlNotYetValid);
    }
    if now > issued + max_age + skew {
        return Err(Error::SamlExpired);
    }
    let not_on_or_after = time_attr(&request, "NotOnOrAfter")?;
    if not_on_or_after.is_some_and(|t| now - skew >= t) {
        return Err(Error::SamlExpired);
    }
    let name_id = request
        .child(NS_ASSERTION, "NameID")
        .filter(|n| !n.value().is_empty())
        .ok_or(Error::SamlNameId)?;
    if name_id.attr("NameQualifier").is_some_and(|q| q != idp) {
        return Err(Error::SamlIssuer);
    }
    if name_id
        .attr("SPNameQualifier")
        .is_some_and(|q| q != sp.config.entity_id)
    {
        return Err(Error::SamlAudience);
    }
    let mut session_indexes = Vec::new();
    for index in request.children(NS_PROTOCOL, "SessionIndex") {
        if index.value().is_empty() {
            return Err(Error::SamlMalformed("an empty SessionIndex"));
        }
        session_indexes.push(index.value().to_owned());
    }
    let id = shape.request_id;
    // Remembered as long as the request could be accepted (both windows hold), plus skew.
    let accepted_until = match not_on_or_after {
        Some(t) => t.min(issued + max_age),
        None => issued + max_age,
    };
    let replay = ReplayCheck {
        key: format!("logout-request\n{idp}\n{id}"),
        keep_until: accepted_until + skew + time::Duration::seconds(1),
        now,
    };
    Ok((
        SamlLogoutRequest {
            id,
            name_id: SamlNameId {
                value: name_id.value().to_owned(),
                format: name_id.attr("Format").map(str::to_owned),
                name_qualifier: name_id.attr("NameQualifier").map(str::to_owned),
                sp_name_qualifier: name_id.attr("SPNameQualifier").map(str::to_owned),
            },
            session_indexes,
            issue_instant: issued,
            not_on_or_after,
        },
        replay,
    ))
}

impl SamlServiceProvider {
    /// Verifies the body of a POST to the SOAP SingleLogoutService: a SOAP 1.1 envelope
    /// carrying the IdP's signed `LogoutRequest` (see the module's checks; needs
    /// [`crate::SamlSpConfig::with_soap_slo_url`]). The request's ID is accepted once: a
    /// second use is [`Error::SamlReplay`]. A body that is not such an envelope is
    /// [`Error::SamlSoap`], [`Error::SamlXmlRefused`] or [`Error::SamlResponseTooLarge`]
    /// (answer with [`soap_fault`]); any other refusal is answered with
    /// [`Self::soap_logout_response`] and [`SamlLogoutStatus::Refused`].
    pub async fn verify_soap_logout(&self, body: &[u8]) -> Result<SamlLogoutRequest, Error> {
        let (request, replay) = validate(self, body)?;
        self.use_once(&replay).await?;
        Ok(request)
    }

    /// The SOAP envelope answering a back-channel LogoutRequest (HTTP 200, `text/xml`):
    /// a `LogoutResponse` from this SP with the status, `InResponseTo` the request's ID
    /// when it verified, and an enveloped signature (RSA-SHA256 or ECDSA-SHA256,
    /// exclusive c14n) when the SP has a signing key.
    pub fn soap_logout_response(
        &self,
        in_response_to: Option<&str>,
        status: SamlLogoutStatus,
    ) -> Result<String, Error> {
        let id = new_id()?;
        let now = instant(self.clock.now());
        let mut attrs = vec![
            ("xmlns:samlp", PROTOCOL),
            ("xmlns:saml", NS_ASSERTION),
            ("ID", id.as_str()),
            ("Version", "2.0"),
            ("IssueInstant", now.as_str()),
        ];
        if let Some(irt) = in_response_to {
            attrs.push(("InResponseTo", irt));
        }
        let mut w = Writer::new();
        w.open("samlp:LogoutResponse", &attrs);
        w.element("saml:Issuer", &[], &self.config.entity_id);
        if let Some(key) = &self.config.signing_key {
            key.signature_template(&mut w, &id);
        }
        w.open("samlp:Status", &[]);
        match status {
            SamlLogoutStatus::Success => {
                w.empty("samlp:StatusCode", &[("Value", STATUS_SUCCESS)]);
            }
            SamlLogoutStatus::Refused => {
                w.open("samlp:StatusCode", &[("Value", STATUS_REQUESTER)])
                    .empty("samlp:StatusCode", &[("Value", STATUS_REQUEST_DENIED)])
                    .close("samlp:StatusCode");
            }
            SamlLogoutStatus::Unavailable => {
                w.empty("samlp:StatusCode", &[("Value", STATUS_RESPONDER)]);
            }
        }
        w.close("samlp:Status").close("samlp:LogoutResponse");
        let mut message = w.finish();
        if let Some(key) = &self.config.signing_key {
            message = key.sign_enveloped(&message)?;
        }
        Ok(soap_envelope(&message))
    }
}

/// `message` (an XML declaration dropped) in a SOAP 1.1 envelope.
pub(crate) fn soap_envelope(message: &str) -> String {
    let body = message
        .trim_start()
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>"))
        .map_or(message, |(_, body)| body.trim_start());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{NS_SOAP}"><soap:Body>{body}</soap:Body></soap:Envelope>"#
    )
}

/// A SOAP 1.1 fault (`soap:Client`) for a body that is not a SOAP envelope carrying a
/// LogoutRequest; SOAP over HTTP sends it with status 500.
pub fn soap_fault(reason: &str) -> String {
    let mut w = Writer::new();
    w.open("soap:Envelope", &[("xmlns:soap", NS_SOAP)])
        .open("soap:Body", &[])
        .open("soap:Fault", &[])
        .element("faultcode", &[], "soap:Client")
        .element("faultstring", &[], reason)
        .close("soap:Fault")
        .close("soap:Body")
        .close("soap:Envelope");
    format!(r#"<?xml version="1.0" encoding="UTF-8"?>{}"#, w.finish())
}
