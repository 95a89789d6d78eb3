//! Released claims as SAML attributes (DESIGN.md §4): the same vocabulary as the OIDC
//! side, standard attributes by their `urn:oid:` names, hcRole by the HPKI coding-scheme
//! OID, everything else under the project's claim URN.

use idp_vocabulary::{claim, saml_attribute as attr};
use serde_json::{Map, Value};

use crate::xml::XmlWriter;

/// One attribute to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub friendly_name: Option<&'static str>,
    pub values: Vec<String>,
}

/// The attribute name and friendly name of a claim (`family_name#ja-Kana-JP` included).
pub fn attribute_name(claim_name: &str) -> (String, Option<&'static str>) {
    let standard = match claim_name {
        claim::NAME => Some((attr::DISPLAY_NAME, "displayName")),
        claim::FAMILY_NAME => Some((attr::SURNAME, "sn")),
        claim::GIVEN_NAME => Some((attr::GIVEN_NAME, "givenName")),
        claim::EMAIL => Some((attr::MAIL, "mail")),
        claim::HPKI_ROLE => Some((attr::HC_ROLE, "hcRole")),
        claim::ADDRESS => Some((attr::POSTAL_ADDRESS, "postalAddress")),
        _ => None,
    };
    match standard {
        Some((name, friendly)) => (name.to_owned(), Some(friendly)),
        None => (
            format!("{}{}", attr::CLAIM_PREFIX, claim_name.replace('#', ":")),
            None,
        ),
    }
}

/// The claim a SAML attribute name stands for (the inverse of [`attribute_name`]);
/// used to read an SP's requested attributes.
pub fn claim_name(attribute: &str) -> Option<String> {
    for c in [
        claim::NAME,
        claim::FAMILY_NAME,
        claim::GIVEN_NAME,
        claim::EMAIL,
        claim::HPKI_ROLE,
        claim::ADDRESS,
    ] {
        if attribute_name(c).0 == attribute {
            return Some(c.to_owned());
        }
    }
    attribute
        .strip_prefix(attr::CLAIM_PREFIX)
        .map(|rest| rest.split(':').next().unwrap_or(rest).to_owned())
}

fn values_of(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        Value::Array(items) => items.iter().flat_map(values_of).collect(),
        // An address: its formatted form.
        Value::Object(map) => map
            .get("formatted")
            .and_then(Value::as_str)
            .map(|s| vec![s.to_owned()])
            .unwrap_or_default(),
        Value::Null => Vec::new(),
    }
}

/// The attributes for released claim values (`oidc::release::released_values`).
/// `verified_claims` is an OIDC structure and has no SAML form.
pub fn attributes(released: &Map<String, Value>) -> Vec<Attribute> {
    let mut out: Vec<Attribute> = released
        .iter()
        .filter(|(name, _)| name.as_str() != claim::VERIFIED_CLAIMS)
        .filter_map(|(name, value)| {
            let values = values_of(value);
            if values.is_empty() {
                return None;
            }
            let (name, friendly_name) = attribute_name(name);
            Some(Attribute {
                name,
                friendly_name,
                values,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Writes `saml:AttributeStatement` (nothing when there is no attribute: an empty
/// statement is invalid against the schema).
pub fn write_statement(w: &mut XmlWriter, attributes: &[Attribute]) {
    if attributes.is_empty() {
        return;
    }
    w.open("saml:AttributeStatement", &[]);
    for a in attributes {
        let mut attrs = vec![
            ("Name", a.name.as_str()),
            ("NameFormat", attr::NAME_FORMAT_URI),
        ];
        if let Some(friendly) = a.friendly_name {
            attrs.push(("FriendlyName", friendly));
        }
        w.open("saml:Attribute", &attrs);
        for v in &a.values {
            w.element("saml:AttributeValue", &[("xsi:type", "xs:string")], v);
        }
        w.close("saml:Attribute");
    }
    w.close("saml:AttributeStatement");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn standard_and_project_names() {
        assert_eq!(
            attribute_name("hpki_role"),
            ("urn:oid:1.2.392.100495.1.6.1.1".to_owned(), Some("hcRole"))
        );
        assert_eq!(
            attribute_name("family_name#ja-Kana-JP").0,
            "urn:jp:hpki-idp:claim:family_name:ja-Kana-JP"
        );
        assert_eq!(
            claim_name("urn:oid:2.5.4.4").as_deref(),
            Some("family_name")
        );
        assert_eq!(
            claim_name("urn:jp:hpki-idp:claim:family_name:ja-Kana-JP").as_deref(),
            Some("family_name")
        );
        assert_eq!(claim_name("urn:oid:9.9.9"), None);
    }

    #[test]
    fn values_flatten_and_verified_claims_stay_oidc_only() {
        let released = json!({
            "hpki_role": "Medical Doctor",
            "jma_member": true,
            "address": {"formatted": "岡山県", "region": "岡山県"},
            "verified_claims": {"x": 1},
        });
        let attrs = attributes(released.as_object().expect("object"));
        let names: Vec<&str> = attrs.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "urn:jp:hpki-idp:claim:jma_member",
                "urn:oid:1.2.392.100495.1.6.1.1",
                "urn:oid:2.5.4.16"
            ]
        );
        assert_eq!(attrs[0].values, ["true"]);
    }
}
