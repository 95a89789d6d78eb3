//! The SAML 2.0 identity provider (SAML Core, Bindings, Profiles and Metadata 2.0) on the
//! same HPKI session, claim vocabulary and consent as the OpenID Provider.
//!
//! samael supplies the xmlsec signer and verifier and its metadata and request structs;
//! everything samael does not do safely is done here (docs/SAML-SAMAEL.md): the
//! HTTP-Redirect binding (bounded inflate, query-string signatures over the octets as
//! received), the XML pre-checks that run before any XML parser sees a message
//! ([`guard`]), the signature-shape check against wrapping ([`shape`]), and every XML
//! document we send, which we write ourselves with escaped text.

pub mod attributes;
pub mod authn;
pub mod crypto;
pub mod guard;
pub mod idp;
pub mod logout;
pub mod metadata;
pub mod redirect;
pub mod response;
pub mod shape;
pub mod sp;
pub mod xml;
