//! SAML 2.0 IdP logic (in progress, issue 4). What samael does not do safely is done here
//! (docs/SAML-SAMAEL.md): the HTTP-Redirect binding (bounded inflate, query-string
//! signature over the bytes as received) and the XML pre-checks that run before any XML
//! parser sees a message.

pub mod redirect;
pub mod signature_shape;
pub mod xml_guard;
