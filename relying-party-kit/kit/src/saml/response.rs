//! Validation of the IdP's `samlp:Response` (SAML Core §3.2.2, Profiles §4.1.4.3,
//! §4.1.4.5), in this order, each refusal its own error:
//! 1. size cap, base64, XML guard (no DTD or entity, UTF-8 only, no PI or controls);
//! 2. structure check against signature wrapping (depth, element count, placement and
//!    shape of signatures, one assertion, unique IDs);
//! 3. every signature verified by samael/xmlsec with the IdP's certificates only,
//!    SHA-256 or stronger, in `PreDigest` mode; only the returned (signed) bytes are read,
//!    and their root must carry the ID the structure check saw;
//! 4. Response: version, `Destination` = ACS, `Issuer` = IdP, `InResponseTo`, status;
//! 5. the one assertion: `Issuer`, audience, bearer confirmation (`Recipient`,
//!    `NotOnOrAfter`, `InResponseTo`), conditions, the AuthnStatement;
//! 6. the replay cache, last, so that a refused response is never remembered.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openidconnect::{AuthenticationContextClass, SubjectIdentifier};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::xml::{self, Element, NS_ASSERTION, NS_PROTOCOL};
use super::{
    CM_BEARER, NAMEID_ENTITY, STATUS_SUCCESS, SamlLogin, SamlNameId, SamlPendingLogin,
    SamlServiceProvider, claims_from_attributes,
};
use crate::{Doctor, Error};

/// Signature algorithms accepted (each also restricts its digest to its own family, so
/// SHA-1 is refused).
/// Verifies every signature of `text` with the IdP's metadata certificates only (never a
/// `KeyInfo` of the message) and the [`ALLOWED`] algorithms, and parses only the bytes
/// xmlsec digested. The caller checks that they are the element its shape check saw.
pub(super) fn signed_by_idp(sp: &SamlServiceProvider, text: &str) -> Result<Element, Error> {
    let certificates: Vec<CertificateDer> = sp
        .idp
        .certificates
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let signed = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        text,
        &certificates,
        ReduceMode::PreDigest,
        Some(ALLOWED),
    )
    .map_err(|_| Error::SamlSignature)?;
    xml::parse(&signed)
}

pub(super) const ALLOWED: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

pub(super) fn time_attr(e: &Element, name: &str) -> Result<Option<OffsetDateTime>, Error> {
    e.attr(name)
        .map(|v| {
            OffsetDateTime::parse(v.trim(), &Rfc3339)
                .map_err(|_| Error::SamlMalformed("a time that is not an xs:dateTime with zone"))
        })
        .transpose()
}

/// The Response and assertion elements whose content is trusted, after verification.
struct Verified {
    response: Element,
    assertion: Option<Element>,
    response_signed: bool,
}

/// Steps 1–3.
fn verify(sp: &SamlServiceProvider, encoded: &str) -> Result<Verified, Error> {
    let max = sp.config.max_response_bytes;
    if encoded.len() > max.saturating_mul(4) / 3 + 1024 {
        return Err(Error::SamlResponseTooLarge);
    }
    let cleaned: String = encoded
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    let bytes = B64
        .decode(cleaned)
        .map_err(|_| Error::SamlMalformed("the SAMLResponse is not base64"))?;
    let text = xml::guard(&bytes, max)?;
    let shape = xml::check_response_shape(text)?;
    // WantAssertionsSigned="true": the assertion carries its own signature; a Response
    // without an assertion (a status) must be signed itself.
    match &shape.assertion_id {
        Some(_) if !shape.assertion_signed => return Err(Error::SamlUnsigned),
        None if !shape.response_signed => return Err(Error::SamlUnsigned),
        _ => {}
    }
    // What xmlsec digested is read, and it must be the element the structure check saw.
    let signed = signed_by_idp(sp, text)?;
    let assertion_of = |parent: &Element| -> Result<Option<Element>, Error> {
        let mut found = parent.children(NS_ASSERTION, "Assertion");
        let first = found.next().cloned();
        if found.next().is_some() {
            return Err(Error::SamlAssertionCount);
        }
        if first.as_ref().and_then(|a| a.attr("ID")) != shape.assertion_id.as_deref() {
            return Err(Error::SamlStructure(
                "the signed assertion is not the one checked",
            ));
        }
        Ok(first)
    };
    if shape.response_signed {
        if !signed.is(NS_PROTOCOL, "Response") || signed.attr("ID") != Some(&shape.response_id) {
            return Err(Error::SamlStructure(
                "the signed element is not the Response",
            ));
        }
        let assertion = assertion_of(&signed)?;
        Ok(Verified {
            response: signed,
            assertion,
            response_signed: true,
        })
    } else {
        // Only the assertion is signed: the envelope is read from the whole message
        // (its checks protect nothing the assertion's own do not), the assertion only
        // from the signed bytes.
        if !signed.is(NS_ASSERTION, "Assertion")
            || signed.attr("ID") != shape.assertion_id.as_deref()
        {
            return Err(Error::SamlStructure(
                "the signed element is not the assertion",
            ));
        }
        let mut response = xml::parse(text)?;
        if response.attr("ID") != Some(&shape.response_id) {
            return Err(Error::SamlStructure("the Response is not the one checked"));
        }
        response
            .children
            .retain(|c| !c.is(NS_ASSERTION, "Assertion"));
        Ok(Verified {
            response,
            assertion: Some(signed),
            response_signed: false,
        })
    }
}

/// An `Issuer` must be the IdP's entity ID (format absent or `entity`).
pub(super) fn issuer_ok(issuer: &Element, idp: &str) -> bool {
    issuer.value() == idp && matches!(issuer.attr("Format"), None | Some(NAMEID_ENTITY))
}

/// `InResponseTo` against the pending request (or its absence for an unsolicited one).
fn check_in_response_to(
    sp: &SamlServiceProvider,
    pending: Option<&SamlPendingLogin>,
    in_response_to: Option<&str>,
) -> Result<(), Error> {
    match pending {
        Some(p) if in_response_to == Some(p.request_id.as_str()) => Ok(()),
        Some(_) => Err(Error::SamlInResponseTo),
        None if sp.config.allow_idp_initiated && in_response_to.is_none() => Ok(()),
        None => Err(Error::SamlUnsolicited),
    }
}

/// What the replay cache must still accept before a validated message may be used: its
/// key, until when to remember it, and the time of the check.
pub(super) struct ReplayCheck {
    pub(super) key: String,
    pub(super) keep_until: OffsetDateTime,
    pub(super) now: OffsetDateTime,
}

/// Every check but the replay cache, which the caller consults last (and asynchronously:
/// a shared cache is a network call) so that a refused response is never remembered.
pub(super) fn validate(
    sp: &SamlServiceProvider,
    pending: Option<&SamlPendingLogin>,
    encoded: &str,
) -> Result<(SamlLogin, ReplayCheck), Error> {
    let now = sp.clock.now();
    let skew = time::Duration::try_from(sp.config.clock_skew)
        .map_err(|_| Error::Config("the clock skew is out of range".into()))?;
    let idp = sp.idp.entity_id.as_str();
    let Verified {
        response,
        assertion,
        response_signed,
    } = verify(sp, encoded)?;

    // The Response.
    if response.attr("Version") != Some("2.0") {
        return Err(Error::SamlMalformed("the Response's version is not 2.0"));
    }
    if response.attr("Destination") != Some(sp.config.acs_url.as_str()) {
        return Err(Error::SamlDestination);
    }
    if let Some(issuer) = response.child(NS_ASSERTION, "Issuer")
        && !issuer_ok(issuer, idp)
    {
        return Err(Error::SamlIssuer);
    }
    let response_irt = response.attr("InResponseTo");
    check_in_response_to(sp, pending, response_irt)?;
    if let Some(p) = pending {
        let age = time::Duration::try_from(sp.config.max_login_age)
            .map_err(|_| Error::Config("the login age is out of range".into()))?;
        if now > p.issued_at + age + skew {
            return Err(Error::SamlLoginExpired);
        }
    }
    let status = response
        .child(NS_PROTOCOL, "Status")
        .ok_or(Error::SamlMalformed("the Response has no Status"))?;
    let mut codes = Vec::new();
    let mut code = status.child(NS_PROTOCOL, "StatusCode");
    while let Some(c) = code {
        codes.push(
            c.attr("Value")
                .ok_or(Error::SamlMalformed("a StatusCode without a value"))?
                .to_owned(),
        );
        code = c.child(NS_PROTOCOL, "StatusCode");
    }
    match codes.first().map(String::as_str) {
        Some(STATUS_SUCCESS) => {}
        Some(_) if response_signed || assertion.is_some() => {
            return Err(Error::SamlStatus { codes });
        }
        Some(_) => return Err(Error::SamlUnsigned),
        None => return Err(Error::SamlMalformed("the Status has no StatusCode")),
    }

    // The assertion.
    let assertion = assertion.ok_or(Error::SamlAssertionCount)?;
    if assertion.attr("Version") != Some("2.0") {
        return Err(Error::SamlMalformed("the assertion's version is not 2.0"));
    }
    let assertion_id = assertion
        .attr("ID")
        .ok_or(Error::SamlMalformed("the assertion has no ID"))?
        .to_owned();
    match assertion.child(NS_ASSERTION, "Issuer") {
        Some(issuer) if issuer_ok(issuer, idp) => {}
        _ => return Err(Error::SamlIssuer),
    }
    let issued = time_attr(&assertion, "IssueInstant")?
        .ok_or(Error::SamlMalformed("the assertion has no IssueInstant"))?;
    if issued > now + skew {
        return Err(Error::SamlNotYetValid);
    }

    // Conditions: the audience and the validity window.
    let conditions = assertion
        .child(NS_ASSERTION, "Conditions")
        .ok_or(Error::SamlAudience)?;
    let restrictions: Vec<&Element> = conditions
        .children(NS_ASSERTION, "AudienceRestriction")
        .collect();
    // Every AudienceRestriction must name us (Core §2.5.1.4); at least one must exist.
    if restrictions.is_empty()
        || !restrictions.iter().all(|r| {
            r.children(NS_ASSERTION, "Audience")
                .any(|a| a.value() == sp.config.entity_id)
        })
    {
        return Err(Error::SamlAudience);
    }
    let not_before = time_attr(conditions, "NotBefore")?;
    let conditions_end = time_attr(conditions, "NotOnOrAfter")?;
    if not_before.is_some_and(|t| now + skew < t) {
        return Err(Error::SamlNotYetValid);
    }
    if conditions_end.is_some_and(|t| now - skew >= t) {
        return Err(Error::SamlExpired);
    }

    // Subject: NameID and a bearer confirmation (Profiles §4.1.4.2).
    let subject = assertion
        .child(NS_ASSERTION, "Subject")
        .ok_or(Error::SamlNameId)?;
    let name_id = subject
        .child(NS_ASSERTION, "NameID")
        .filter(|n| !n.value().is_empty())
        .ok_or(Error::SamlNameId)?;
    let mut confirmed_until = None;
    let mut first_refusal = None;
    for confirmation in subject
        .children(NS_ASSERTION, "SubjectConfirmation")
        .filter(|c| c.attr("Method") == Some(CM_BEARER))
    {
        match check_bearer(sp, pending, confirmation, now, skew) {
            Ok(until) => {
                confirmed_until = Some(until);
                break;
            }
            Err(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    let confirmed_until = match (confirmed_until, first_refusal) {
        (Some(until), _) => until,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(Error::SamlSubjectConfirmation(
                "no bearer SubjectConfirmation",
            ));
        }
    };

    // The AuthnStatement (Profiles §4.1.4.2: at least one).
    let statement = assertion
        .child(NS_ASSERTION, "AuthnStatement")
        .ok_or(Error::SamlMalformed("the assertion has no AuthnStatement"))?;
    let authn_instant = time_attr(statement, "AuthnInstant")?;
    let session_end = time_attr(statement, "SessionNotOnOrAfter")?;
    if session_end.is_some_and(|t| now - skew >= t) {
        return Err(Error::SamlExpired);
    }
    let authn_context_class = statement
        .child(NS_ASSERTION, "AuthnContext")
        .and_then(|c| c.child(NS_ASSERTION, "AuthnContextClassRef"))
        .map(|c| c.value().to_owned());

    let attributes: Vec<(String, Vec<String>)> = assertion
        .children(NS_ASSERTION, "AttributeStatement")
        .flat_map(|s| s.children(NS_ASSERTION, "Attribute"))
        .filter_map(|a| {
            let name = a.attr("Name")?.to_owned();
            let values = a
                .children(NS_ASSERTION, "AttributeValue")
                .map(|v| v.text.clone())
                .collect();
            Some((name, values))
        })
        .collect();

    // Last (by the caller): the assertion is used once, remembered until it could no
    // longer be accepted.
    let replay = ReplayCheck {
        key: format!("{idp}\n{assertion_id}"),
        keep_until: conditions_end.map_or(confirmed_until, |c| c.max(confirmed_until)) + skew,
        now,
    };

    let name_id = SamlNameId {
        value: name_id.value().to_owned(),
        format: name_id.attr("Format").map(str::to_owned),
        name_qualifier: name_id.attr("NameQualifier").map(str::to_owned),
        sp_name_qualifier: name_id.attr("SPNameQualifier").map(str::to_owned),
    };
    let claims = claims_from_attributes(&attributes);
    let doctor = Doctor::from_claims(
        SubjectIdentifier::new(name_id.value.clone()),
        &claims,
        authn_context_class
            .clone()
            .map(AuthenticationContextClass::new),
        Vec::new(),
        authn_instant,
    );
    Ok((
        SamlLogin {
            doctor,
            name_id,
            session_index: statement.attr("SessionIndex").map(str::to_owned),
            session_not_on_or_after: session_end,
            authn_context_class,
            authn_instant,
            assertion_id,
            in_response_to: response_irt.map(str::to_owned),
            idp_entity_id: idp.to_owned(),
        },
        replay,
    ))
}

/// One bearer `SubjectConfirmationData`: `Recipient` = ACS, `NotOnOrAfter` required and
/// in the future, `NotBefore` absent or past, `InResponseTo` = the pending request.
/// Returns its `NotOnOrAfter`.
fn check_bearer(
    sp: &SamlServiceProvider,
    pending: Option<&SamlPendingLogin>,
    confirmation: &Element,
    now: OffsetDateTime,
    skew: time::Duration,
) -> Result<OffsetDateTime, Error> {
    let data = confirmation
        .child(NS_ASSERTION, "SubjectConfirmationData")
        .ok_or(Error::SamlSubjectConfirmation("no SubjectConfirmationData"))?;
    if data.attr("Recipient") != Some(sp.config.acs_url.as_str()) {
        return Err(Error::SamlSubjectConfirmation(
            "the Recipient is not the ACS URL",
        ));
    }
    let until = time_attr(data, "NotOnOrAfter")?
        .ok_or(Error::SamlSubjectConfirmation("no NotOnOrAfter"))?;
    if now - skew >= until {
        return Err(Error::SamlExpired);
    }
    if time_attr(data, "NotBefore")?.is_some_and(|t| now + skew < t) {
        return Err(Error::SamlNotYetValid);
    }
    check_in_response_to(sp, pending, data.attr("InResponseTo"))?;
    Ok(until)
}
