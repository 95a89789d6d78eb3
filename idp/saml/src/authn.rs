//! Intake of an `AuthnRequest` (SAML Core §3.4, Profiles §4.1.4.1) over HTTP-Redirect or
//! HTTP-POST: decoded with bounds, checked by the XML guard, its SP found by `Issuer`,
//! its signature verified when the SP or the IdP requires one (query-string signature
//! over the octets as received, or an enveloped signature of the shape we accept, after
//! which only the signed bytes are read), then the protocol checks: version, issue
//! instant, `Destination`, the ACS from the SP's metadata only, NameID policy and
//! requested authentication context.

use std::time::Duration;

use base64::Engine as _;
use samael::schema::{AuthnContextComparison, AuthnRequest};
use time::OffsetDateTime;

use crate::crypto::{self, VerifyError};
use crate::guard;
use crate::redirect;
use crate::response::{AUTHN_CONTEXT_SMARTCARD_PKI, SamlStatus, status};
use crate::sp::{NAMEID_UNSPECIFIED, NameIdFormat, ServiceProvider};

/// The HTTP-POST binding's URI.
pub const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// The longest `RelayState` accepted (Bindings §3.4.3 says 80 bytes; SPs send more).
pub const MAX_RELAY_STATE: usize = 1024;

/// How a message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// HTTP-Redirect: the raw query string.
    Redirect,
    /// HTTP-POST: the form's `SAMLRequest` value (base64).
    Post,
}

/// A raw message as received.
#[derive(Clone, Copy, Debug)]
pub enum Received<'a> {
    /// The raw (still percent-encoded) query string of a Redirect-binding GET.
    Redirect { raw_query: &'a str },
    /// The form fields of a POST-binding request.
    Post {
        message: &'a str,
        relay_state: Option<&'a str>,
    },
}

/// An AuthnRequest that passed every check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AcceptedRequest {
    pub id: String,
    pub sp_entity_id: String,
    /// From the SP's metadata.
    pub acs_url: String,
    pub relay_state: Option<String>,
    pub force_authn: bool,
    pub is_passive: bool,
    pub name_id_format: NameIdFormat,
    pub signed: bool,
}

/// Why an AuthnRequest was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// Nobody can be answered safely (malformed, unknown issuer, unverified, ACS not in
    /// the metadata, replayed): the browser gets a page, the SP nothing.
    #[error("{0}")]
    Untrusted(String),
    /// The SP is answered with a SAML status at its registered ACS.
    #[error("{0:?}")]
    Status(Box<StatusAnswer>),
}

/// A SAML status to send to a registered ACS in answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusAnswer {
    pub acs_url: String,
    pub in_response_to: String,
    pub relay_state: Option<String>,
    pub status: SamlStatus,
}

fn untrusted(reason: impl std::fmt::Display) -> IntakeError {
    IntakeError::Untrusted(reason.to_string())
}

/// The parts of an intake that do not depend on the message.
#[derive(Clone, Debug)]
pub struct IntakeRules<'a> {
    /// Our SSO endpoint URLs (`Destination` must be one of them when present).
    pub sso_urls: &'a [String],
    /// Signed requests required from every SP.
    pub require_signed: bool,
    pub now: OffsetDateTime,
    /// How old (or how far in the future, with skew) an IssueInstant may be.
    pub max_age: Duration,
    pub skew: Duration,
}

/// The decoded XML, relay state and Redirect signature of a received message.
pub(crate) struct Decoded {
    pub(crate) binding: Binding,
    pub(crate) xml: String,
    pub(crate) relay_state: Option<String>,
    pub(crate) query_signature: Option<redirect::QuerySignature>,
}

/// A received AuthnRequest, decoded and parsed once: its `Issuer` names the SP whose
/// keys and metadata [`accept`] then checks it against. Nothing in it is trusted yet.
pub struct Incoming {
    decoded: Decoded,
    unverified: AuthnRequest,
    issuer: String,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("binding", &self.decoded.binding)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// The SP the request claims to come from (unverified: a lookup key only).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// First step: decode (bounded), guard, parse, and find the issuer, to look the SP up.
pub fn read(received: Received<'_>) -> Result<Incoming, IntakeError> {
    let decoded = decode_message(received, "SAMLRequest")?;
    let unverified = parse_request(&decoded.xml)?;
    let issuer = issuer_of(&unverified)?;
    Ok(Incoming {
        decoded,
        unverified,
        issuer,
    })
}

/// Decodes a received message (`SAMLRequest` or `SAMLResponse`).
pub(crate) fn decode_message(
    received: Received<'_>,
    param: &'static str,
) -> Result<Decoded, IntakeError> {
    match received {
        Received::Redirect { raw_query } => {
            let m = redirect::decode(raw_query, param).map_err(untrusted)?;
            Ok(Decoded {
                binding: Binding::Redirect,
                xml: m.xml,
                relay_state: m.relay_state,
                query_signature: m.signature,
            })
        }
        Received::Post {
            message,
            relay_state,
        } => Ok(Decoded {
            binding: Binding::Post,
            xml: decode_post(message)?,
            relay_state: relay_state.map(str::to_owned),
            query_signature: None,
        }),
    }
}

/// Base64 of a POST-binding message, bounded before decoding.
pub fn decode_post(message: &str) -> Result<String, IntakeError> {
    if message.len() > guard::MAX_MESSAGE_BYTES * 4 / 3 + 4 {
        return Err(untrusted(guard::XmlRefusal::TooLarge));
    }
    let cleaned: String = message.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .map_err(|_| untrusted("the message is not base64"))?;
    Ok(guard::check(&bytes).map_err(untrusted)?.to_owned())
}

/// The namespace and local name of the root element.
pub fn root_element(xml: &str) -> Option<(String, String)> {
    let mut reader = quick_xml::NsReader::from_str(xml);
    loop {
        match reader.read_resolved_event().ok()? {
            (ns, quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                let ns = match ns {
                    quick_xml::name::ResolveResult::Bound(ns) => {
                        String::from_utf8(ns.as_ref().to_vec()).ok()?
                    }
                    _ => String::new(),
                };
                let local = String::from_utf8(e.local_name().as_ref().to_vec()).ok()?;
                return Some((ns, local));
            }
            (_, quick_xml::events::Event::Eof) => return None,
            _ => {}
        }
    }
}

fn parse_request(xml: &str) -> Result<AuthnRequest, IntakeError> {
    match root_element(xml) {
        Some((ns, local)) if ns == crate::xml::NS_SAMLP && local == "AuthnRequest" => {}
        _ => return Err(untrusted("the message is not an AuthnRequest")),
    }
    xml.parse::<AuthnRequest>()
        .map_err(|_| untrusted("the AuthnRequest does not parse"))
}

fn issuer_of(request: &AuthnRequest) -> Result<String, IntakeError> {
    request
        .issuer
        .as_ref()
        .and_then(|i| i.value.clone())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| untrusted("the AuthnRequest has no Issuer"))
}

/// Whether the requested authentication context is satisfied by the card login.
fn context_satisfied(request: &AuthnRequest) -> bool {
    let Some(requested) = &request.requested_authn_context else {
        return true;
    };
    let ours = [
        AUTHN_CONTEXT_SMARTCARD_PKI,
        idp_vocabulary::authn::ACR_HPKI_CARD,
    ];
    let classes: Vec<&str> = requested
        .authn_context_class_refs
        .iter()
        .flatten()
        .filter_map(|c| c.value.as_deref())
        .map(str::trim)
        .collect();
    if classes.is_empty() {
        // Only declaration references, which we do not issue.
        return false;
    }
    let named = classes.iter().any(|c| ours.contains(c));
    match requested
        .comparison
        .clone()
        .unwrap_or(AuthnContextComparison::Exact)
    {
        AuthnContextComparison::Exact => named,
        // The card with its PIN is the strongest context we know: anything else listed
        // is weaker or equal.
        AuthnContextComparison::Minimum | AuthnContextComparison::Maximum => true,
        AuthnContextComparison::Better => !named,
    }
}

/// Second step: every check, with the SP found by [`Incoming::issuer`].
pub fn accept(
    incoming: Incoming,
    sp: &ServiceProvider,
    rules: &IntakeRules<'_>,
) -> Result<AcceptedRequest, IntakeError> {
    let Incoming {
        decoded,
        unverified,
        ..
    } = incoming;
    if decoded
        .relay_state
        .as_ref()
        .is_some_and(|r| r.len() > MAX_RELAY_STATE)
    {
        return Err(untrusted("RelayState is too long"));
    }
    let must_sign = sp.requires_signed_requests(rules.require_signed);
    let (request, signed) = match &decoded.query_signature {
        Some(signature) => {
            if !sp.signing_certificates.iter().any(|c| signature.verify(c)) {
                return Err(untrusted(VerifyError::BadSignature));
            }
            // The query signature covers the whole message as received.
            (unverified, true)
        }
        None => {
            let has_xml_signature = !matches!(
                crate::shape::check(&decoded.xml),
                Err(crate::shape::ShapeError::Unsigned)
            );
            if (has_xml_signature && decoded.binding == Binding::Post) || must_sign {
                if decoded.binding == Binding::Redirect {
                    return Err(untrusted("the request must be signed"));
                }
                let (root_id, signed_xml) =
                    crypto::verify_enveloped(&decoded.xml, &sp.signing_certificates)
                        .map_err(untrusted)?;
                let request = parse_request(&signed_xml)?;
                if request.id != root_id {
                    return Err(untrusted("the signed element is not the request"));
                }
                (request, true)
            } else {
                (unverified, false)
            }
        }
    };
    if issuer_of(&request)? != sp.entity_id {
        return Err(untrusted("the Issuer is not the SP"));
    }
    if request.id.is_empty() {
        return Err(untrusted("the AuthnRequest has no ID"));
    }
    // The ACS comes from the metadata only; a request naming another is never answered.
    let acs = sp
        .acs_for(
            request.assertion_consumer_service_url.as_deref(),
            request.assertion_consumer_service_index,
        )
        .ok_or_else(|| untrusted("the AssertionConsumerService is not in the SP's metadata"))?;
    if let Some(destination) = &request.destination {
        if !rules.sso_urls.iter().any(|u| u == destination) {
            return Err(untrusted("the Destination is not this IdP's SSO endpoint"));
        }
    } else if signed {
        // Bindings §3.4.5.2 / §3.5.5.2: a signed message must name its destination.
        return Err(untrusted("a signed AuthnRequest must carry a Destination"));
    }
    let issued = OffsetDateTime::from_unix_timestamp(request.issue_instant.timestamp())
        .map_err(|_| untrusted("the IssueInstant is out of range"))?;
    if issued > rules.now + rules.skew || issued < rules.now - rules.max_age - rules.skew {
        return Err(untrusted("the IssueInstant is too old or in the future"));
    }
    let refuse = |status: SamlStatus| {
        IntakeError::Status(Box::new(StatusAnswer {
            acs_url: acs.location.clone(),
            in_response_to: request.id.clone(),
            relay_state: decoded.relay_state.clone(),
            status,
        }))
    };
    if request.version != "2.0" {
        return Err(refuse(SamlStatus::new(
            status::VERSION_MISMATCH,
            None,
            "only SAML 2.0",
        )));
    }
    if request
        .protocol_binding
        .as_deref()
        .is_some_and(|b| b != HTTP_POST)
    {
        return Err(refuse(SamlStatus::requester(
            Some(status::UNSUPPORTED_BINDING),
            "responses are sent by HTTP-POST only",
        )));
    }
    let name_id_format = match request
        .name_id_policy
        .as_ref()
        .and_then(|p| p.format.as_deref())
    {
        None | Some(NAMEID_UNSPECIFIED) => sp.settings.name_id_format,
        Some(uri) => NameIdFormat::from_uri(uri).ok_or_else(|| {
            refuse(SamlStatus::requester(
                Some(status::INVALID_NAMEID_POLICY),
                "persistent and transient NameIDs only",
            ))
        })?,
    };
    if !context_satisfied(&request) {
        return Err(refuse(SamlStatus::requester(
            Some(status::NO_AUTHN_CONTEXT),
            "the requested authentication context is not offered",
        )));
    }
    Ok(AcceptedRequest {
        id: request.id.clone(),
        sp_entity_id: sp.entity_id.clone(),
        acs_url: acs.location.clone(),
        relay_state: decoded.relay_state.clone(),
        force_authn: request.force_authn.unwrap_or(false),
        is_passive: request.is_passive.unwrap_or(false),
        name_id_format,
        signed,
    })
}
