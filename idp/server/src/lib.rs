//! The `idp` server: configuration, TLS listeners, handlers and the command line.

pub mod account_api;
pub mod admin;
pub mod app;
pub mod config;
pub mod crl;
pub mod demo;
pub mod disclosure;
pub mod oidc;
pub mod pages;
pub mod saml;
pub mod serve;
pub mod tls;
