//! The IdP's own metadata (SAML Metadata 2.0), written here because samael's serializer
//! drops `WantAuthnRequestsSigned`, misorders the descriptor's children and cannot sign
//! (docs/SAML-SAMAEL.md §4). Signed with the IdP key; lists every published certificate
//! (the signing one and the next, during a rollover).

use std::time::Duration;

use time::OffsetDateTime;

use crate::crypto::{SignError, SigningCredential};
use crate::sp::{NAMEID_PERSISTENT, NAMEID_TRANSIENT};
use crate::xml::{XmlWriter, instant, new_id};

pub const HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub const HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// What the metadata publishes.
#[derive(Clone, Debug)]
pub struct IdpDescription<'a> {
    pub entity_id: &'a str,
    pub sso_url: &'a str,
    pub slo_url: &'a str,
    pub want_authn_requests_signed: bool,
    /// Base64 DER certificates (signing first, then any next one).
    pub certificates: &'a [String],
    /// How long the document is valid (`validUntil`) and may be cached (`cacheDuration`).
    pub valid_for: Duration,
    pub cache_for: Duration,
    /// SAML attribute names the IdP can release.
    pub attributes: &'a [(String, Option<&'static str>)],
    pub organization: &'a str,
    pub now: OffsetDateTime,
}

fn xs_duration(d: Duration) -> String {
    format!("PT{}S", d.as_secs())
}

/// The signed metadata document.
pub fn idp_metadata(
    credential: &SigningCredential,
    d: &IdpDescription<'_>,
) -> Result<String, SignError> {
    let id = new_id();
    let valid_until = instant(d.now + d.valid_for);
    let cache = xs_duration(d.cache_for);
    let mut w = XmlWriter::new();
    w.open(
        "md:EntityDescriptor",
        &[
            ("ID", &id),
            ("entityID", d.entity_id),
            ("validUntil", &valid_until),
            ("cacheDuration", &cache),
        ],
    );
    let slot = w.position();
    w.open(
        "md:IDPSSODescriptor",
        &[
            (
                "protocolSupportEnumeration",
                "urn:oasis:names:tc:SAML:2.0:protocol",
            ),
            (
                "WantAuthnRequestsSigned",
                if d.want_authn_requests_signed {
                    "true"
                } else {
                    "false"
                },
            ),
        ],
    );
    for cert in d.certificates {
        w.open("md:KeyDescriptor", &[("use", "signing")])
            .open("ds:KeyInfo", &[])
            .open("ds:X509Data", &[])
            .element("ds:X509Certificate", &[], cert)
            .close("ds:X509Data")
            .close("ds:KeyInfo")
            .close("md:KeyDescriptor");
    }
    for binding in [HTTP_REDIRECT, HTTP_POST] {
        w.empty(
            "md:SingleLogoutService",
            &[("Binding", binding), ("Location", d.slo_url)],
        );
    }
    for format in [NAMEID_PERSISTENT, NAMEID_TRANSIENT] {
        w.element("md:NameIDFormat", &[], format);
    }
    for binding in [HTTP_REDIRECT, HTTP_POST] {
        w.empty(
            "md:SingleSignOnService",
            &[("Binding", binding), ("Location", d.sso_url)],
        );
    }
    for (name, friendly) in d.attributes {
        let mut attrs = vec![
            ("Name", name.as_str()),
            (
                "NameFormat",
                idp_vocabulary::saml_attribute::NAME_FORMAT_URI,
            ),
        ];
        if let Some(f) = friendly {
            attrs.push(("FriendlyName", f));
        }
        w.empty("saml:Attribute", &attrs);
    }
    w.close("md:IDPSSODescriptor");
    w.open("md:Organization", &[])
        .element("md:OrganizationName", &[("xml:lang", "ja")], d.organization)
        .element(
            "md:OrganizationDisplayName",
            &[("xml:lang", "ja")],
            d.organization,
        )
        .element("md:OrganizationURL", &[("xml:lang", "ja")], d.entity_id)
        .close("md:Organization");
    w.close("md:EntityDescriptor");
    let mut xml = w.finish();
    let end = xml.len();
    credential.sign_enveloped(&mut xml, 0..end, slot, &id)?;
    Ok(xml)
}
