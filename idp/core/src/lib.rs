//! Protocol and domain logic of the HPKI identity provider.
//!
//! No HTTP, no database, no clock of its own: functions here take loaded values and the
//! current time, and return decisions or typed values. `idp-server` does the I/O.

pub mod account;
pub mod audit;
pub mod disclosure;
pub mod doctor;
pub mod hpki;
pub mod login;
pub mod oidc;
pub mod secret;
pub mod session;
pub mod store;
