//! Service providers: read from their SAML metadata (samael's structs, after the XML
//! guard), plus the settings an administrator gives them. Only what the metadata says is
//! trusted: assertion consumer service URLs, single-logout endpoints and signing keys.

use std::collections::BTreeSet;
use std::time::Duration;

use samael::metadata::{EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attributes::claim_name;
use crate::guard::{self, MAX_METADATA_BYTES};

pub const NAMEID_PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
pub const NAMEID_TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
pub const NAMEID_UNSPECIFIED: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified";

/// The NameID an SP receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameIdFormat {
    /// Pairwise per SP and stable across logins (the default).
    #[default]
    Persistent,
    /// New for every assertion.
    Transient,
}

impl NameIdFormat {
    pub fn uri(self) -> &'static str {
        match self {
            Self::Persistent => NAMEID_PERSISTENT,
            Self::Transient => NAMEID_TRANSIENT,
        }
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        match uri {
            NAMEID_PERSISTENT => Some(Self::Persistent),
            NAMEID_TRANSIENT => Some(Self::Transient),
            _ => None,
        }
    }
}

fn yes() -> bool {
    true
}

/// What an administrator decides about an SP (configuration, `idp sp add`, admin API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpSettings {
    /// The name doctors see on the consent page (default: the entity ID).
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub name_id_format: NameIdFormat,
    /// Sign the Response as well as the Assertion (the Assertion is always signed).
    #[serde(default = "yes")]
    pub sign_response: bool,
    /// Require signed AuthnRequests even when the metadata does not say
    /// `AuthnRequestsSigned`.
    #[serde(default)]
    pub require_signed_requests: bool,
    /// Claims the SP may receive; empty: those its metadata requests
    /// (`RequestedAttribute`), or none.
    #[serde(default)]
    pub claims: Vec<String>,
    /// No consent page for this SP (the organisation has agreed on the doctors' behalf).
    #[serde(default)]
    pub pre_approved: bool,
    /// The kind of organisation, for the disclosure policy and the doctors' settings
    /// (default: third party, to whom the least is released).
    #[serde(default)]
    pub audience: idp_core::disclosure::Audience,
    /// Where the metadata is refreshed from (HTTPS), if not a file.
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// PEM certificate whose key must have signed fetched metadata.
    #[serde(default)]
    pub metadata_signing_certificate: Option<String>,
    /// Unsolicited (IdP-initiated) responses allowed, to this ACS URL (from the metadata).
    #[serde(default)]
    pub idp_initiated: bool,
}

impl Default for SpSettings {
    fn default() -> Self {
        Self {
            display_name: None,
            name_id_format: NameIdFormat::Persistent,
            sign_response: true,
            require_signed_requests: false,
            claims: Vec::new(),
            pre_approved: false,
            audience: idp_core::disclosure::Audience::ThirdParty,
            metadata_url: None,
            metadata_signing_certificate: None,
            idp_initiated: false,
        }
    }
}

/// An assertion consumer service (HTTP-POST only: the Response goes by POST).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acs {
    pub index: usize,
    pub location: String,
    pub is_default: bool,
}

/// A single-logout endpoint of the SP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SloEndpoint {
    pub binding: SloBinding,
    pub location: String,
    /// Where LogoutResponses go, when not `location`.
    pub response_location: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SloBinding {
    Redirect,
    Post,
    /// Back channel: the IdP calls the SP directly.
    Soap,
}

/// Why metadata was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("the metadata is not acceptable XML: {0}")]
    Xml(#[from] crate::guard::XmlRefusal),
    #[error("the metadata does not parse: {0}")]
    Parse(String),
    #[error("the metadata has no entityID")]
    NoEntityId,
    #[error("the metadata has no SPSSODescriptor")]
    NotAnSp,
    #[error("the SP has no HTTP-POST AssertionConsumerService")]
    NoAcs,
    #[error("the metadata expired at {0}")]
    Expired(String),
    #[error("a certificate in the metadata is not valid base64 DER")]
    Certificate,
    #[error("the metadata signature does not verify: {0}")]
    Signature(String),
    #[error("an endpoint is not an absolute https URL (http only for loopback): {0}")]
    Endpoint(String),
}

/// A registered service provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceProvider {
    pub entity_id: String,
    pub acs: Vec<Acs>,
    pub slo: Vec<SloEndpoint>,
    /// DER certificates whose keys sign the SP's requests.
    pub signing_certificates: Vec<Vec<u8>>,
    pub authn_requests_signed: bool,
    pub want_assertions_signed: bool,
    /// Claims named by `RequestedAttribute`s.
    pub requested_claims: BTreeSet<String>,
    /// Those of them with `isRequired="true"`.
    pub required_claims: BTreeSet<String>,
    pub valid_until: Option<OffsetDateTime>,
    pub cache_duration: Option<Duration>,
    pub settings: SpSettings,
    /// The metadata as registered.
    pub metadata: String,
}

/// An endpoint URL must be absolute https (http only on loopback, for development).
fn endpoint_ok(url: &str) -> bool {
    if let Some(rest) = url.strip_prefix("https://") {
        return !rest.is_empty() && !rest.starts_with('/');
    }
    url.strip_prefix("http://").is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    })
}

/// Removes `cacheDuration` attributes from role descriptors: samael reads them as integers
/// although they are xs:duration (docs/SAML-SAMAEL.md §5); only the EntityDescriptor's
/// is used.
fn strip_role_cache_durations(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tag_end = rest[start..]
            .find('>')
            .map_or(rest.len(), |e| start + e + 1);
        let tag = &rest[start..tag_end];
        let is_role = tag.contains("SSODescriptor");
        if is_role && let Some(at) = tag.find("cacheDuration=") {
            let value_start = at + "cacheDuration=".len();
            let quote = tag[value_start..].chars().next().unwrap_or('"');
            let value_end = tag[value_start + 1..]
                .find(quote)
                .map_or(tag.len(), |e| value_start + 1 + e + 1);
            out.push_str(&tag[..at]);
            out.push_str(&tag[value_end..]);
        } else {
            out.push_str(tag);
        }
        rest = &rest[tag_end..];
    }
    out.push_str(rest);
    out
}

/// xs:duration (`P1D`, `PT6H`, `P1DT12H30M5S`); years and months are refused (not a
/// fixed length).
pub fn parse_duration(value: &str) -> Option<Duration> {
    let rest = value.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut seconds = 0u64;
    let mut number = String::new();
    for c in days.chars() {
        match c {
            '0'..='9' => number.push(c),
            'D' => seconds += number.parse::<u64>().ok()? * 86_400,
            'W' => seconds += number.parse::<u64>().ok()? * 7 * 86_400,
            _ => return None,
        }
        if !c.is_ascii_digit() {
            number.clear();
        }
    }
    if !number.is_empty() {
        return None;
    }
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        for c in time.chars() {
            match c {
                '0'..='9' | '.' => number.push(c),
                'H' => seconds += number.parse::<u64>().ok()? * 3600,
                'M' => seconds += number.parse::<u64>().ok()? * 60,
                'S' => seconds += number.parse::<f64>().ok()?.floor() as u64,
                _ => return None,
            }
            if !(c.is_ascii_digit() || c == '.') {
                number.clear();
            }
        }
        if !number.is_empty() {
            return None;
        }
    }
    Some(Duration::from_secs(seconds))
}

fn to_time(t: chrono::DateTime<chrono::Utc>) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}

impl ServiceProvider {
    /// The SP as a relying party of the release decision.
    pub fn relying_party(&self) -> idp_core::oidc::release::RelyingParty<'_> {
        idp_core::oidc::release::RelyingParty {
            id: &self.entity_id,
            protocol: idp_core::oidc::release::Protocol::Saml,
            pre_approved: self.settings.pre_approved,
            audience: self.settings.audience,
        }
    }

    /// Reads an SP from its metadata. When `settings.metadata_signing_certificate` is set,
    /// the metadata must carry a valid enveloped signature by that certificate's key.
    pub fn from_metadata(
        xml: &str,
        settings: SpSettings,
        now: OffsetDateTime,
    ) -> Result<Self, MetadataError> {
        let xml = guard::check_sized(xml.as_bytes(), MAX_METADATA_BYTES)?;
        let parsed_from = match &settings.metadata_signing_certificate {
            Some(pem) => {
                let der = pem_certificate(pem).ok_or(MetadataError::Certificate)?;
                let (_, signed) =
                    crate::crypto::verify_enveloped_sized(xml, &[der], MAX_METADATA_BYTES)
                        .map_err(|e| MetadataError::Signature(e.to_string()))?;
                signed
            }
            None => xml.to_owned(),
        };
        let descriptor = strip_role_cache_durations(&parsed_from)
            .parse::<EntityDescriptor>()
            .map_err(|e| MetadataError::Parse(e.to_string()))?;
        let entity_id = descriptor
            .entity_id
            .clone()
            .filter(|e| !e.is_empty())
            .ok_or(MetadataError::NoEntityId)?;
        let valid_until = descriptor.valid_until.and_then(to_time);
        if let Some(until) = valid_until
            && until <= now
        {
            return Err(MetadataError::Expired(crate::xml::instant(until)));
        }
        let cache_duration = descriptor
            .cache_duration
            .as_deref()
            .and_then(parse_duration);
        let sp = descriptor
            .sp_sso_descriptors
            .as_ref()
            .and_then(|d| d.first())
            .ok_or(MetadataError::NotAnSp)?;
        let mut acs = Vec::new();
        for endpoint in &sp.assertion_consumer_services {
            if endpoint.binding != HTTP_POST_BINDING {
                continue;
            }
            if !endpoint_ok(&endpoint.location) {
                return Err(MetadataError::Endpoint(endpoint.location.clone()));
            }
            acs.push(Acs {
                index: endpoint.index,
                location: endpoint.location.clone(),
                is_default: endpoint.is_default.unwrap_or(false),
            });
        }
        if acs.is_empty() {
            return Err(MetadataError::NoAcs);
        }
        let mut slo = Vec::new();
        for endpoint in sp.single_logout_services.iter().flatten() {
            let binding = match endpoint.binding.as_str() {
                HTTP_REDIRECT_BINDING => SloBinding::Redirect,
                HTTP_POST_BINDING => SloBinding::Post,
                crate::logout::SOAP_BINDING => SloBinding::Soap,
                _ => continue,
            };
            for url in std::iter::once(&endpoint.location).chain(&endpoint.response_location) {
                if !endpoint_ok(url) {
                    return Err(MetadataError::Endpoint(url.to_string()));
                }
            }
            slo.push(SloEndpoint {
                binding,
                location: endpoint.location.clone(),
                response_location: endpoint.response_location.clone(),
            });
        }
        let mut signing_certificates = Vec::new();
        for key in sp.key_descriptors.iter().flatten() {
            // No `use` means both signing and encryption.
            if key.key_use.as_deref().is_some_and(|u| u != "signing") {
                continue;
            }
            for cert in key.key_info.x509_data.iter().flat_map(|d| &d.certificates) {
                let der = samael::crypto::decode_x509_cert(cert)
                    .map_err(|_| MetadataError::Certificate)?;
                x509_parser::parse_x509_certificate(der.der_data())
                    .map_err(|_| MetadataError::Certificate)?;
                signing_certificates.push(der.der_data().to_vec());
            }
        }
        let requested = || {
            sp.attribute_consuming_services
                .iter()
                .flatten()
                .flat_map(|s| &s.request_attributes)
        };
        let requested_claims = requested().filter_map(|a| claim_name(&a.name)).collect();
        let required_claims = requested()
            .filter(|a| a.is_required == Some(true))
            .filter_map(|a| claim_name(&a.name))
            .collect();
        Ok(Self {
            entity_id,
            acs,
            slo,
            signing_certificates,
            authn_requests_signed: sp.authn_requests_signed.unwrap_or(false),
            want_assertions_signed: sp.want_assertions_signed.unwrap_or(false),
            requested_claims,
            required_claims,
            valid_until,
            cache_duration,
            settings,
            metadata: xml.to_owned(),
        })
    }

    /// The name shown to doctors.
    pub fn display_name(&self) -> &str {
        self.settings
            .display_name
            .as_deref()
            .unwrap_or(&self.entity_id)
    }

    /// Whether requests from this SP must be signed.
    pub fn requires_signed_requests(&self, idp_requires: bool) -> bool {
        idp_requires || self.authn_requests_signed || self.settings.require_signed_requests
    }

    /// The ACS a request asks for: its URL must equal a registered location exactly;
    /// else its index; else the default; else the lowest index. `None`: the request
    /// names an ACS that is not registered (never answered).
    pub fn acs_for(&self, url: Option<&str>, index: Option<usize>) -> Option<&Acs> {
        if let Some(url) = url {
            return self.acs.iter().find(|a| a.location == url);
        }
        if let Some(index) = index {
            return self.acs.iter().find(|a| a.index == index);
        }
        self.acs
            .iter()
            .find(|a| a.is_default)
            .or_else(|| self.acs.iter().min_by_key(|a| a.index))
    }

    /// The claims this SP may receive.
    pub fn claims(&self) -> BTreeSet<String> {
        if self.settings.claims.is_empty() {
            self.requested_claims.clone()
        } else {
            self.settings.claims.iter().cloned().collect()
        }
    }

    /// When the metadata should be fetched again (URL sources): the earlier of
    /// `validUntil` and now + `cacheDuration` (default `fallback`).
    pub fn refresh_at(&self, fetched_at: OffsetDateTime, fallback: Duration) -> OffsetDateTime {
        let by_cache = fetched_at + self.cache_duration.unwrap_or(fallback);
        match self.valid_until {
            Some(until) if until < by_cache => until,
            _ => by_cache,
        }
    }

    /// The front-channel SLO endpoint (Redirect first, then POST).
    pub fn slo_endpoint(&self) -> Option<&SloEndpoint> {
        self.slo
            .iter()
            .find(|e| e.binding == SloBinding::Redirect)
            .or_else(|| self.slo.iter().find(|e| e.binding == SloBinding::Post))
    }

    /// The back-channel (SOAP) SLO endpoint, if the SP has one.
    pub fn soap_slo_endpoint(&self) -> Option<&SloEndpoint> {
        self.slo.iter().find(|e| e.binding == SloBinding::Soap)
    }
}

/// The DER of the first certificate in a PEM text.
pub fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    openssl::x509::X509::from_pem(pem.as_bytes())
        .ok()?
        .to_der()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const METADATA: &str = r#"<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://sp.example.jp/saml" cacheDuration="PT6H">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="true" WantAssertionsSigned="true" cacheDuration="PT1H">
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://sp.example.jp/slo"/>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact" Location="https://sp.example.jp/art" index="0"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.jp/acs" index="1"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.jp/acs2" index="2" isDefault="true"/>
    <md:AttributeConsumingService index="0">
      <md:ServiceName xml:lang="ja">テスト</md:ServiceName>
      <md:RequestedAttribute Name="urn:oid:1.2.392.100495.1.6.1.1" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri" isRequired="true"/>
      <md:RequestedAttribute Name="urn:oid:2.5.4.4"/>
    </md:AttributeConsumingService>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-24 09:00 UTC)
    }

    #[test]
    fn reads_what_matters() {
        let sp = ServiceProvider::from_metadata(METADATA, SpSettings::default(), now())
            .expect("metadata");
        assert_eq!(sp.entity_id, "https://sp.example.jp/saml");
        assert_eq!(sp.acs.len(), 2, "the artifact ACS is not used");
        assert!(sp.authn_requests_signed && sp.want_assertions_signed);
        assert_eq!(sp.cache_duration, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(sp.slo[0].binding, SloBinding::Redirect);
        assert_eq!(
            sp.claims(),
            ["family_name".to_owned(), "hpki_role".to_owned()].into()
        );
        assert_eq!(sp.required_claims, ["hpki_role".to_owned()].into());
    }

    #[test]
    fn acs_selection_never_invents_a_url() {
        let sp = ServiceProvider::from_metadata(METADATA, SpSettings::default(), now())
            .expect("metadata");
        let loc = |a: Option<&Acs>| a.map(|a| a.location.clone());
        assert_eq!(
            loc(sp.acs_for(None, None)).as_deref(),
            Some("https://sp.example.jp/acs2")
        );
        assert_eq!(
            loc(sp.acs_for(None, Some(1))).as_deref(),
            Some("https://sp.example.jp/acs")
        );
        assert_eq!(
            loc(sp.acs_for(Some("https://sp.example.jp/acs"), None)).as_deref(),
            Some("https://sp.example.jp/acs")
        );
        assert_eq!(sp.acs_for(Some("https://evil.example/acs"), None), None);
        assert_eq!(sp.acs_for(Some("https://sp.example.jp/acs/"), None), None);
        assert_eq!(
            sp.acs_for(None, Some(0)),
            None,
            "index 0 is the artifact ACS"
        );
    }

    #[test]
    fn refuses_expired_dtd_and_plain_http() {
        let expired = METADATA.replace(
            "cacheDuration=\"PT6H\"",
            "validUntil=\"2026-01-01T00:00:00Z\"",
        );
        assert!(matches!(
            ServiceProvider::from_metadata(&expired, SpSettings::default(), now()),
            Err(MetadataError::Expired(_))
        ));
        let dtd = METADATA.replace(
            "<?xml version=\"1.0\"?>",
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>",
        );
        assert!(matches!(
            ServiceProvider::from_metadata(&dtd, SpSettings::default(), now()),
            Err(MetadataError::Xml(_))
        ));
        let http = METADATA.replace("https://sp.example.jp/acs2", "http://sp.example.jp/acs2");
        assert!(matches!(
            ServiceProvider::from_metadata(&http, SpSettings::default(), now()),
            Err(MetadataError::Endpoint(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT6H"), Some(Duration::from_secs(21_600)));
        assert_eq!(
            parse_duration("P1DT30M5.5S"),
            Some(Duration::from_secs(88_205))
        );
        assert_eq!(parse_duration("P1M"), None);
        assert_eq!(parse_duration("PT"), None);
        assert_eq!(parse_duration("6H"), None);
    }
}
