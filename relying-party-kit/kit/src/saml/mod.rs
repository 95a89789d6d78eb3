//! The SAML 2.0 service provider: SP metadata, the `AuthnRequest` over HTTP-Redirect
//! (signed query string), validation of the IdP's `Response` over HTTP-POST ending in the
//! same verified [`Doctor`] as the OIDC client, an SP-initiated `LogoutRequest`, and the
//! IdP's back-channel `LogoutRequest` over SOAP with its signed `LogoutResponse`.
//!
//! Invariants (each cited at its decision point):
//! - Every received document passes the XML guard and the structure check before xmlsec
//!   or any tree parser sees it; signatures are verified with the IdP's configured
//!   certificates only (never a `KeyInfo` in the message) by samael's
//!   `reduce_xml_to_signed_with_allowed_algorithms` in `PreDigest` mode, with SHA-256 or
//!   stronger, and only the bytes it returns (what was signed) are read afterwards.
//! - The assertion must carry its own signature (our metadata says
//!   `WantAssertionsSigned="true"`); a Response signature, when present, is verified too.
//! - Every check fails closed with its own [`Error`] variant; no message carries assertion
//!   contents.

mod logout;
mod response;
mod xml;

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use idp_vocabulary::{claim, saml_attribute};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use url::Url;

use crate::replay::{Clock, MemoryReplayCache, ReplayCache, ReplayVerdict, SystemClock};
pub use logout::{
    MAX_SOAP_LOGOUT_BYTES as SAML_MAX_SOAP_LOGOUT_BYTES, SamlLogoutRequest, SamlLogoutStatus,
    soap_fault as saml_soap_fault,
};
pub use xml::{MAX_DEPTH as SAML_MAX_DEPTH, MAX_ELEMENTS as SAML_MAX_ELEMENTS};

use crate::{Claims, Doctor, Error};
use xml::{NS_DSIG, NS_METADATA, Writer};

/// SAML URIs the service provider uses.
pub mod saml_uri {
    pub const BINDING_HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
    pub const BINDING_HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
    pub const BINDING_SOAP: &str = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP";
    pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
    pub const NAMEID_ENTITY: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";
    /// The AuthnContext class of the IdP's card login (certificate on a smart card whose
    /// key the PIN unlocks, SAML AuthnContext §3.4.20).
    pub const AC_SMARTCARD_PKI: &str = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI";
    pub const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
    pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
    pub const STATUS_REQUEST_DENIED: &str = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied";
    pub const STATUS_NO_PASSIVE: &str = "urn:oasis:names:tc:SAML:2.0:status:NoPassive";
    pub const STATUS_REQUESTER: &str = "urn:oasis:names:tc:SAML:2.0:status:Requester";
    pub const STATUS_RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
    pub const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
    pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
}
use saml_uri::*;

/// The longest `RelayState` the kit sends (SAML Bindings §3.4.3: 80 bytes).
pub const MAX_RELAY_STATE: usize = 80;
/// The largest IdP metadata document accepted by [`SamlIdp::from_metadata`].
pub const MAX_METADATA_BYTES: usize = 512 * 1024;

/// The service provider's key for signing its requests, and its certificate (published
/// in the SP metadata, where the IdP takes it from).
#[derive(Clone)]
pub struct SamlSigningKey {
    key: PKey<Private>,
    certificate_der: Vec<u8>,
}

impl fmt::Debug for SamlSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlSigningKey").finish_non_exhaustive()
    }
}

impl SamlSigningKey {
    /// A PEM private key (PKCS#8, PKCS#1 or SEC1; RSA of at least 2048 bits or P-256)
    /// and its PEM certificate.
    pub fn from_pem(key_pem: &str, certificate_pem: &str) -> Result<Self, Error> {
        let key = PKey::private_key_from_pem(key_pem.as_bytes())
            .map_err(|_| Error::Config("the SAML signing key is not a PEM private key".into()))?;
        let cert = openssl::x509::X509::from_pem(certificate_pem.as_bytes()).map_err(|_| {
            Error::Config("the SAML signing certificate is not a PEM certificate".into())
        })?;
        match key.id() {
            Id::RSA if key.bits() >= 2048 => {}
            Id::EC if key.bits() == 256 => {}
            _ => {
                return Err(Error::Config(
                    "the SAML signing key must be RSA (2048 bits or more) or P-256".into(),
                ));
            }
        }
        let public = cert
            .public_key()
            .map_err(|_| Error::Config("the SAML signing certificate has no public key".into()))?;
        if !public.public_eq(&key) {
            return Err(Error::Config(
                "the SAML signing key does not belong to its certificate".into(),
            ));
        }
        let certificate_der = cert
            .to_der()
            .map_err(|_| Error::Config("the SAML signing certificate cannot be encoded".into()))?;
        Ok(Self {
            key,
            certificate_der,
        })
    }

    fn sig_alg(&self) -> &'static str {
        if self.key.id() == Id::EC {
            ECDSA_SHA256
        } else {
            RSA_SHA256
        }
    }

    /// An enveloped-signature template for the element with `id` (exclusive c14n, SHA-256,
    /// this key's algorithm, the certificate in `KeyInfo`), for [`Self::sign_enveloped`].
    pub(crate) fn signature_template(&self, w: &mut Writer, id: &str) {
        let reference = format!("#{id}");
        w.open("ds:Signature", &[("xmlns:ds", NS_DSIG)])
            .open("ds:SignedInfo", &[])
            .empty("ds:CanonicalizationMethod", &[("Algorithm", xml::EXC_C14N)])
            .empty("ds:SignatureMethod", &[("Algorithm", self.sig_alg())])
            .open("ds:Reference", &[("URI", &reference)])
            .open("ds:Transforms", &[])
            .empty("ds:Transform", &[("Algorithm", xml::ENVELOPED)])
            .empty("ds:Transform", &[("Algorithm", xml::EXC_C14N)])
            .close("ds:Transforms")
            .empty("ds:DigestMethod", &[("Algorithm", xml::SHA256)])
            .element("ds:DigestValue", &[], "")
            .close("ds:Reference")
            .close("ds:SignedInfo")
            .element("ds:SignatureValue", &[], "")
            .open("ds:KeyInfo", &[])
            .open("ds:X509Data", &[])
            .element(
                "ds:X509Certificate",
                &[],
                &B64.encode(&self.certificate_der),
            )
            .close("ds:X509Data")
            .close("ds:KeyInfo")
            .close("ds:Signature");
    }

    /// Fills in the one signature template of `xml` (written with
    /// [`Self::signature_template`]) through xmlsec; returns the signed document.
    pub(crate) fn sign_enveloped(&self, xml: &str) -> Result<String, Error> {
        use samael::crypto::{Crypto, CryptoProvider as _};
        let fail = || Error::Config("signing the SAML message failed".into());
        let der = self.key.private_key_to_pkcs8().map_err(|_| fail())?;
        Crypto::sign_xml(xml, &der).map_err(|_| fail())
    }

    /// The signature of `octets` as XML Signature encodes it (ECDSA as r ‖ s).
    fn sign(&self, octets: &[u8]) -> Result<Vec<u8>, Error> {
        let fail = |_| Error::Config("signing the SAML request failed".into());
        let mut signer =
            openssl::sign::Signer::new(MessageDigest::sha256(), &self.key).map_err(fail)?;
        signer.update(octets).map_err(fail)?;
        let signature = signer.sign_to_vec().map_err(fail)?;
        if self.key.id() != Id::EC {
            return Ok(signature);
        }
        let ecdsa = openssl::ecdsa::EcdsaSig::from_der(&signature).map_err(fail)?;
        let mut raw = ecdsa.r().to_vec_padded(32).map_err(fail)?;
        raw.extend(ecdsa.s().to_vec_padded(32).map_err(fail)?);
        Ok(raw)
    }
}

/// The identity provider as the service provider knows it: entity ID, SSO and SLO
/// endpoints (HTTP-Redirect) and the certificates whose keys sign its responses.
#[derive(Clone)]
pub struct SamlIdp {
    entity_id: String,
    sso_url: Url,
    slo_url: Option<Url>,
    certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for SamlIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlIdp")
            .field("entity_id", &self.entity_id)
            .field("sso_url", &self.sso_url.as_str())
            .field("slo_url", &self.slo_url.as_ref().map(Url::as_str))
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

fn certificate_der(pem_or_base64: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::Config("an IdP certificate does not parse".into());
    let cert = if pem_or_base64.contains("-----BEGIN") {
        openssl::x509::X509::from_pem(pem_or_base64.as_bytes()).map_err(|_| bad())?
    } else {
        let cleaned: String = pem_or_base64
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = B64.decode(cleaned).map_err(|_| bad())?;
        openssl::x509::X509::from_der(&der).map_err(|_| bad())?
    };
    cert.to_der().map_err(|_| bad())
}

fn endpoint(url: &str) -> Result<Url, Error> {
    let parsed = Url::parse(url).map_err(|_| Error::Config(format!("not a URL: {url}")))?;
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback) {
        Ok(parsed)
    } else {
        Err(Error::Config(format!(
            "an endpoint must be https (http only on loopback): {url}"
        )))
    }
}

impl SamlIdp {
    /// The IdP from its entity ID, its HTTP-Redirect SSO URL and its signing certificates
    /// (PEM, or the base64 of `ds:X509Certificate`).
    pub fn new(entity_id: &str, sso_url: &str, certificates: &[&str]) -> Result<Self, Error> {
        if entity_id.is_empty() {
            return Err(Error::Config("the IdP entity ID is empty".into()));
        }
        if certificates.is_empty() {
            return Err(Error::Config("the IdP needs a signing certificate".into()));
        }
        Ok(Self {
            entity_id: entity_id.to_owned(),
            sso_url: endpoint(sso_url)?,
            slo_url: None,
            certificates: certificates
                .iter()
                .map(|c| certificate_der(c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The IdP's HTTP-Redirect Single Logout URL.
    pub fn with_slo_url(mut self, slo_url: &str) -> Result<Self, Error> {
        self.slo_url = Some(endpoint(slo_url)?);
        Ok(self)
    }

    /// The IdP from its metadata (an `EntityDescriptor` with an `IDPSSODescriptor`): the
    /// entity ID, the HTTP-Redirect SSO and SLO endpoints and the signing certificates
    /// (`KeyDescriptor` with `use="signing"` or without `use`). The document goes through
    /// the XML guard; its own signature is not checked here, so load it from a source you
    /// trust (a file you deployed, or the IdP's HTTPS URL).
    pub fn from_metadata(metadata: &str) -> Result<Self, Error> {
        let text = xml::guard(metadata.as_bytes(), MAX_METADATA_BYTES)?;
        let root = xml::parse(text)?;
        if !root.is(NS_METADATA, "EntityDescriptor") {
            return Err(Error::Config(
                "the IdP metadata is not an EntityDescriptor".into(),
            ));
        }
        let entity_id = root
            .attr("entityID")
            .ok_or_else(|| Error::Config("the IdP metadata has no entityID".into()))?;
        let descriptor = root
            .children(NS_METADATA, "IDPSSODescriptor")
            .find(|d| {
                d.attr("protocolSupportEnumeration")
                    .is_some_and(|p| p.split_ascii_whitespace().any(|p| p == PROTOCOL))
            })
            .ok_or_else(|| {
                Error::Config("the IdP metadata has no SAML 2.0 IDPSSODescriptor".into())
            })?;
        let redirect = |local: &str| {
            descriptor
                .children(NS_METADATA, local)
                .find(|e| e.attr("Binding") == Some(BINDING_HTTP_REDIRECT))
                .and_then(|e| e.attr("Location"))
        };
        let sso = redirect("SingleSignOnService").ok_or_else(|| {
            Error::Config("the IdP metadata has no HTTP-Redirect SingleSignOnService".into())
        })?;
        let certificates: Vec<&str> = descriptor
            .children(NS_METADATA, "KeyDescriptor")
            .filter(|k| matches!(k.attr("use"), None | Some("signing")))
            .filter_map(|k| k.child(NS_DSIG, "KeyInfo"))
            .filter_map(|k| k.child(NS_DSIG, "X509Data"))
            .flat_map(|d| d.children(NS_DSIG, "X509Certificate"))
            .map(|c| c.value())
            .collect();
        let idp = Self::new(entity_id, sso, &certificates)?;
        match redirect("SingleLogoutService") {
            Some(slo) => idp.with_slo_url(slo),
            None => Ok(idp),
        }
    }

    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    pub fn sso_url(&self) -> &Url {
        &self.sso_url
    }

    pub fn slo_url(&self) -> Option<&Url> {
        self.slo_url.as_ref()
    }
}

/// The service provider's settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SamlSpConfig {
    /// This SP's entity ID (the audience the IdP names).
    pub entity_id: String,
    /// The HTTP-POST AssertionConsumerService URL (`Destination` and `Recipient`).
    pub acs_url: String,
    /// An HTTP-Redirect SingleLogoutService URL, published in the metadata.
    pub slo_url: Option<String>,
    /// A SOAP SingleLogoutService URL, published in the metadata: where the IdP posts its
    /// back-channel `LogoutRequest` when the doctor's IdP session ends elsewhere
    /// ([`SamlServiceProvider::verify_soap_logout`]).
    pub soap_slo_url: Option<String>,
    /// Signs AuthnRequests and LogoutRequests; published in the metadata, which then says
    /// `AuthnRequestsSigned="true"` (the IdP then refuses unsigned requests in our name).
    pub signing_key: Option<SamlSigningKey>,
    /// Accept unsolicited (IdP-initiated) responses when no request is pending. Off by
    /// default: such a response cannot be tied to this browser (login CSRF).
    pub allow_idp_initiated: bool,
    /// Clock skew tolerated on every time check (default 60 s).
    pub clock_skew: Duration,
    /// The largest decoded `SAMLResponse` accepted (default 256 KiB).
    pub max_response_bytes: usize,
    /// How long after the request its response is accepted (default 10 min).
    pub max_login_age: Duration,
    /// How long after its `IssueInstant` an IdP's LogoutRequest is accepted (default
    /// 5 min).
    pub max_logout_age: Duration,
}

impl SamlSpConfig {
    pub fn new(entity_id: &str, acs_url: &str) -> Self {
        Self {
            entity_id: entity_id.to_owned(),
            acs_url: acs_url.to_owned(),
            slo_url: None,
            soap_slo_url: None,
            signing_key: None,
            allow_idp_initiated: false,
            clock_skew: Duration::from_secs(60),
            max_response_bytes: 256 * 1024,
            max_login_age: Duration::from_secs(600),
            max_logout_age: Duration::from_secs(300),
        }
    }

    pub fn with_signing_key(mut self, key: SamlSigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    pub fn with_slo_url(mut self, slo_url: &str) -> Self {
        self.slo_url = Some(slo_url.to_owned());
        self
    }

    /// The SOAP SingleLogoutService URL (back-channel logout from the IdP). Its path must
    /// differ from the ACS's and the HTTP-Redirect SLO's: the web integration serves it.
    pub fn with_soap_slo_url(mut self, soap_slo_url: &str) -> Self {
        self.soap_slo_url = Some(soap_slo_url.to_owned());
        self
    }

    pub fn with_max_logout_age(mut self, age: Duration) -> Self {
        self.max_logout_age = age;
        self
    }

    pub fn allow_idp_initiated(mut self, allow: bool) -> Self {
        self.allow_idp_initiated = allow;
        self
    }

    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    pub fn with_max_login_age(mut self, age: Duration) -> Self {
        self.max_login_age = age;
        self
    }

    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The SP metadata (see [`SamlServiceProvider::metadata`]); needs nothing of the IdP,
    /// so it can be handed to the IdP before the IdP's own metadata is known.
    pub fn metadata(&self) -> String {
        let c = self;
        let mut w = Writer::new();
        w.open(
            "md:EntityDescriptor",
            &[("xmlns:md", NS_METADATA), ("entityID", &c.entity_id)],
        );
        w.open(
            "md:SPSSODescriptor",
            &[
                ("protocolSupportEnumeration", PROTOCOL),
                (
                    "AuthnRequestsSigned",
                    if c.signing_key.is_some() {
                        "true"
                    } else {
                        "false"
                    },
                ),
                ("WantAssertionsSigned", "true"),
            ],
        );
        if let Some(key) = &c.signing_key {
            w.open("md:KeyDescriptor", &[("use", "signing")])
                .open("ds:KeyInfo", &[("xmlns:ds", NS_DSIG)])
                .open("ds:X509Data", &[])
                .element("ds:X509Certificate", &[], &B64.encode(&key.certificate_der))
                .close("ds:X509Data")
                .close("ds:KeyInfo")
                .close("md:KeyDescriptor");
        }
        if let Some(slo) = &c.slo_url {
            w.empty(
                "md:SingleLogoutService",
                &[("Binding", BINDING_HTTP_REDIRECT), ("Location", slo)],
            );
        }
        if let Some(soap) = &c.soap_slo_url {
            w.empty(
                "md:SingleLogoutService",
                &[("Binding", BINDING_SOAP), ("Location", soap)],
            );
        }
        w.element("md:NameIDFormat", &[], NAMEID_PERSISTENT);
        w.empty(
            "md:AssertionConsumerService",
            &[
                ("Binding", BINDING_HTTP_POST),
                ("Location", &c.acs_url),
                ("index", "0"),
                ("isDefault", "true"),
            ],
        );
        w.close("md:SPSSODescriptor").close("md:EntityDescriptor");
        w.finish()
    }
}

/// What to ask of the IdP in an AuthnRequest.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SamlAuthnOptions {
    /// Sent back by the IdP with the Response (at most [`MAX_RELAY_STATE`] bytes).
    pub relay_state: Option<String>,
    /// A fresh card login even when the doctor has a session at the IdP.
    pub force_authn: bool,
    /// No interaction: the IdP answers `NoPassive` rather than showing a page.
    pub is_passive: bool,
    /// `RequestedAuthnContext` SmartcardPKI (exact).
    pub request_smartcard: bool,
}

impl SamlAuthnOptions {
    /// Asks for the card login's authentication context.
    pub fn hpki_card() -> Self {
        Self {
            request_smartcard: true,
            ..Self::default()
        }
    }

    pub fn with_relay_state(mut self, relay_state: &str) -> Self {
        self.relay_state = Some(relay_state.to_owned());
        self
    }

    pub fn force_authn(mut self) -> Self {
        self.force_authn = true;
        self
    }

    pub fn passive(mut self) -> Self {
        self.is_passive = true;
        self
    }
}

/// What the application keeps between [`SamlServiceProvider::begin`] and
/// [`SamlServiceProvider::finish`] (e.g. in a sealed cookie): the request's ID, which the
/// Response must name in `InResponseTo`, and when it was issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlPendingLogin {
    pub request_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The RelayState sent, for the application to compare with the one posted back.
    pub relay_state: Option<String>,
}

/// The subject's `NameID` as the IdP sent it (needed again for Single Logout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlNameId {
    pub value: String,
    pub format: Option<String>,
    pub name_qualifier: Option<String>,
    pub sp_name_qualifier: Option<String>,
}

/// A validated SAML login.
#[derive(Clone)]
#[non_exhaustive]
pub struct SamlLogin {
    /// The doctor, read from the attributes with the `idp_vocabulary` claim names; the
    /// subject is the NameID (persistent and pairwise per SP at this IdP), `acr` the
    /// `AuthnContextClassRef`, `auth_time` the `AuthnInstant`; SAML has no `amr`.
    pub doctor: Doctor,
    pub name_id: SamlNameId,
    /// `SessionIndex`, for Single Logout.
    pub session_index: Option<String>,
    /// `SessionNotOnOrAfter`: the application's session should not outlive it.
    pub session_not_on_or_after: Option<OffsetDateTime>,
    pub authn_context_class: Option<String>,
    pub authn_instant: Option<OffsetDateTime>,
    pub assertion_id: String,
    /// The request answered; `None` for an accepted IdP-initiated login.
    pub in_response_to: Option<String>,
    pub idp_entity_id: String,
}

impl fmt::Debug for SamlLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlLogin")
            .field("assertion_id", &self.assertion_id)
            .field("in_response_to", &self.in_response_to)
            .field("idp_entity_id", &self.idp_entity_id)
            .finish_non_exhaustive()
    }
}

impl SamlLogin {
    /// Whether the IdP says this was the card login (SmartcardPKI).
    pub fn is_smartcard_login(&self) -> bool {
        self.authn_context_class.as_deref() == Some(AC_SMARTCARD_PKI)
    }
}

/// The SAML 2.0 service provider.
#[derive(Clone)]
pub struct SamlServiceProvider {
    config: SamlSpConfig,
    idp: SamlIdp,
    clock: Arc<dyn Clock>,
    replay: Arc<dyn ReplayCache>,
}

impl fmt::Debug for SamlServiceProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlServiceProvider")
            .field("entity_id", &self.config.entity_id)
            .field("acs_url", &self.config.acs_url)
            .field("idp", &self.idp)
            .finish_non_exhaustive()
    }
}

/// A new request or assertion ID: `_` and 128 random bits in hex (an NCName).
fn new_id() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes)
        .map_err(|_| Error::Config("no randomness for a SAML ID".into()))?;
    Ok(format!(
        "_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// xs:dateTime in UTC with a `Z`, whole seconds.
fn instant(t: OffsetDateTime) -> String {
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

fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl SamlServiceProvider {
    /// A service provider with the system clock and an in-memory replay cache.
    pub fn new(config: SamlSpConfig, idp: SamlIdp) -> Result<Self, Error> {
        if config.entity_id.is_empty() {
            return Err(Error::Config("the SP entity ID is empty".into()));
        }
        let acs = endpoint(&config.acs_url)?;
        let slo = config.slo_url.as_deref().map(endpoint).transpose()?;
        if let Some(soap) = config.soap_slo_url.as_deref().map(endpoint).transpose()? {
            // The web integration routes by path: the SOAP endpoint must have its own.
            if soap.path() == acs.path() || slo.is_some_and(|s| s.path() == soap.path()) {
                return Err(Error::Config(
                    "the SOAP SLO URL's path must differ from the ACS's and the SLO's".into(),
                ));
            }
        }
        Ok(Self {
            config,
            idp,
            clock: Arc::new(SystemClock),
            replay: Arc::new(MemoryReplayCache::default()),
        })
    }

    /// Another clock (tests move time with it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Another replay cache (shared between processes, for example).
    pub fn with_replay_cache(mut self, cache: Arc<dyn ReplayCache>) -> Self {
        self.replay = cache;
        self
    }

    pub fn config(&self) -> &SamlSpConfig {
        &self.config
    }

    pub fn idp(&self) -> &SamlIdp {
        &self.idp
    }

    /// The SP metadata: an `EntityDescriptor` with an `SPSSODescriptor`
    /// (`AuthnRequestsSigned` true when a signing key is configured,
    /// `WantAssertionsSigned="true"`), the signing certificate, the HTTP-Redirect SLO
    /// endpoint if configured, the persistent NameID format and the HTTP-POST ACS.
    /// Serve it as `application/samlmetadata+xml`.
    pub fn metadata(&self) -> String {
        self.config.metadata()
    }

    /// Starts a login: the IdP URL to redirect the browser to (HTTP-Redirect binding, the
    /// query string signed with RSA-SHA256 or ECDSA-SHA256 when a signing key is set) and
    /// the pending login to keep until the Response arrives.
    pub fn begin(&self, options: &SamlAuthnOptions) -> Result<(Url, SamlPendingLogin), Error> {
        if options
            .relay_state
            .as_ref()
            .is_some_and(|r| r.len() > MAX_RELAY_STATE)
        {
            return Err(Error::Config(format!(
                "RelayState is longer than {MAX_RELAY_STATE} bytes"
            )));
        }
        let id = new_id()?;
        let now = self.clock.now();
        let mut w = Writer::new();
        let issue_instant = instant(now);
        let mut attrs = vec![
            ("xmlns:samlp", PROTOCOL),
            ("xmlns:saml", xml::NS_ASSERTION),
            ("ID", id.as_str()),
            ("Version", "2.0"),
            ("IssueInstant", issue_instant.as_str()),
            ("Destination", self.idp.sso_url.as_str()),
            ("AssertionConsumerServiceURL", self.config.acs_url.as_str()),
            ("ProtocolBinding", BINDING_HTTP_POST),
        ];
        if options.force_authn {
            attrs.push(("ForceAuthn", "true"));
        }
        if options.is_passive {
            attrs.push(("IsPassive", "true"));
        }
        w.open("samlp:AuthnRequest", &attrs);
        w.element("saml:Issuer", &[], &self.config.entity_id);
        w.empty(
            "samlp:NameIDPolicy",
            &[("Format", NAMEID_PERSISTENT), ("AllowCreate", "true")],
        );
        if options.request_smartcard {
            w.open("samlp:RequestedAuthnContext", &[("Comparison", "exact")])
                .element("saml:AuthnContextClassRef", &[], AC_SMARTCARD_PKI)
                .close("samlp:RequestedAuthnContext");
        }
        w.close("samlp:AuthnRequest");
        let url = self.redirect_url(
            &self.idp.sso_url,
            &w.finish(),
            options.relay_state.as_deref(),
        )?;
        Ok((
            url,
            SamlPendingLogin {
                request_id: id,
                issued_at: now,
                relay_state: options.relay_state.clone(),
            },
        ))
    }

    /// `endpoint?SAMLRequest=…[&RelayState=…][&SigAlg=…&Signature=…]` (SAML Bindings
    /// §3.4.4.1: the signature covers the parameters exactly as sent).
    fn redirect_url(
        &self,
        endpoint: &Url,
        xml: &str,
        relay_state: Option<&str>,
    ) -> Result<Url, Error> {
        let fail = |_| Error::Config("encoding the SAML request failed".into());
        let mut deflater =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflater.write_all(xml.as_bytes()).map_err(fail)?;
        let deflated = deflater.finish().map_err(fail)?;
        let mut query = format!("SAMLRequest={}", form_encode(&B64.encode(deflated)));
        if let Some(rs) = relay_state {
            query.push_str("&RelayState=");
            query.push_str(&form_encode(rs));
        }
        if let Some(key) = &self.config.signing_key {
            query.push_str("&SigAlg=");
            query.push_str(&form_encode(key.sig_alg()));
            let signature = key.sign(query.as_bytes())?;
            query.push_str("&Signature=");
            query.push_str(&form_encode(&B64.encode(signature)));
        }
        let mut url = endpoint.clone();
        let full = match endpoint.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
            _ => query,
        };
        url.set_query(Some(&full));
        Ok(url)
    }

    /// Validates the `SAMLResponse` form value posted to the ACS. `pending` is the login
    /// [`Self::begin`] started in this browser; `None` accepts an IdP-initiated response
    /// only if [`SamlSpConfig::allow_idp_initiated`] is set. Each refusal is its own
    /// [`Error`] variant; a refused response is not remembered by the replay cache.
    pub async fn finish(
        &self,
        pending: Option<&SamlPendingLogin>,
        saml_response: &str,
    ) -> Result<SamlLogin, Error> {
        let (login, replay) = response::validate(self, pending, saml_response)?;
        self.use_once(&replay).await?;
        Ok(login)
    }

    /// The last check of every message: its ID accepted once (a refused message never
    /// reaches here, so it is never remembered).
    async fn use_once(&self, check: &response::ReplayCheck) -> Result<(), Error> {
        match self
            .replay
            .check_and_remember(&check.key, check.keep_until, check.now)
            .await
        {
            ReplayVerdict::Fresh => Ok(()),
            ReplayVerdict::Replayed => Err(Error::SamlReplay),
            ReplayVerdict::Unavailable => Err(Error::SamlReplayCacheUnavailable),
        }
    }

    /// An SP-initiated logout: the IdP's SLO URL with a signed `LogoutRequest` for the
    /// login's NameID and SessionIndex (HTTP-Redirect), and the request's ID. Needs the
    /// IdP's SLO URL and a signing key (the IdP accepts only signed logout requests).
    pub fn logout_url(
        &self,
        name_id: &SamlNameId,
        session_index: Option<&str>,
        relay_state: Option<&str>,
    ) -> Result<(Url, String), Error> {
        let slo = self
            .idp
            .slo_url
            .as_ref()
            .ok_or_else(|| Error::Config("the IdP has no HTTP-Redirect SLO endpoint".into()))?;
        if self.config.signing_key.is_none() {
            return Err(Error::Config(
                "a LogoutRequest must be signed: no signing key".into(),
            ));
        }
        if relay_state.is_some_and(|r| r.len() > MAX_RELAY_STATE) {
            return Err(Error::Config(format!(
                "RelayState is longer than {MAX_RELAY_STATE} bytes"
            )));
        }
        let id = new_id()?;
        let now = instant(self.clock.now());
        let mut w = Writer::new();
        w.open(
            "samlp:LogoutRequest",
            &[
                ("xmlns:samlp", PROTOCOL),
                ("xmlns:saml", xml::NS_ASSERTION),
                ("ID", &id),
                ("Version", "2.0"),
                ("IssueInstant", &now),
                ("Destination", slo.as_str()),
            ],
        );
        w.element("saml:Issuer", &[], &self.config.entity_id);
        let mut attrs = Vec::new();
        if let Some(f) = &name_id.format {
            attrs.push(("Format", f.as_str()));
        }
        if let Some(q) = &name_id.name_qualifier {
            attrs.push(("NameQualifier", q.as_str()));
        }
        if let Some(q) = &name_id.sp_name_qualifier {
            attrs.push(("SPNameQualifier", q.as_str()));
        }
        w.element("saml:NameID", &attrs, &name_id.value);
        if let Some(index) = session_index {
            w.element("samlp:SessionIndex", &[], index);
        }
        w.close("samlp:LogoutRequest");
        Ok((self.redirect_url(slo, &w.finish(), relay_state)?, id))
    }
}

/// The claim an attribute of this IdP stands for (the inverse of the IdP's naming, by
/// `idp_vocabulary` constants only): the standard `urn:oid:` names, and
/// `urn:jp:hpki-idp:claim:<claim>[:<language tag>]` for the rest
/// (`family_name:ja-Kana-JP` → `family_name#ja-Kana-JP`).
pub(crate) fn claim_for_attribute(name: &str) -> Option<String> {
    let standard = match name {
        saml_attribute::DISPLAY_NAME => Some(claim::NAME),
        saml_attribute::SURNAME => Some(claim::FAMILY_NAME),
        saml_attribute::GIVEN_NAME => Some(claim::GIVEN_NAME),
        saml_attribute::MAIL => Some(claim::EMAIL),
        saml_attribute::HC_ROLE => Some(claim::HPKI_ROLE),
        saml_attribute::POSTAL_ADDRESS => Some(claim::ADDRESS),
        _ => None,
    };
    if let Some(c) = standard {
        return Some(c.to_owned());
    }
    let rest = name.strip_prefix(saml_attribute::CLAIM_PREFIX)?;
    let (base, language) = match rest.split_once(':') {
        Some((base, language)) => (base, Some(language)),
        None => (rest, None),
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let language_ok =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    match language {
        None if name_ok(base) => Some(base.to_owned()),
        Some(l) if name_ok(base) && language_ok(l) => Some(format!("{base}#{l}")),
        _ => None,
    }
}

/// Claims from attributes `(name, values)`: one value becomes a string, several an
/// array; the postal address becomes `{"formatted": …}` as in OIDC. Attributes this IdP
/// does not name are left out; a claim named twice keeps its first attribute.
pub(crate) fn claims_from_attributes(attributes: &[(String, Vec<String>)]) -> Claims {
    let mut claims = Claims::new();
    for (name, values) in attributes {
        let Some(claim_name) = claim_for_attribute(name) else {
            continue;
        };
        if claims.contains_key(&claim_name) || values.is_empty() {
            continue;
        }
        let value = if claim_name == claim::ADDRESS {
            let mut address = serde_json::Map::new();
            address.insert("formatted".into(), Value::String(values.join("\n")));
            Value::Object(address)
        } else if let [one] = values.as_slice() {
            Value::String(one.clone())
        } else {
            Value::Array(values.iter().cloned().map(Value::String).collect())
        };
        claims.insert(claim_name, value);
    }
    claims
}

#[cfg(test)]
pub(crate) mod tests;
