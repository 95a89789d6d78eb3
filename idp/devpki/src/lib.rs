//! Deterministic HPKI-shaped test PKI and virtual doctor cards.
//!
//! [`generate`] writes, into [`Options::out_dir`]:
//!
//! ```text
//! manifest.json            the Manifest (all paths relative to out_dir)
//! README.md                how every file was made
//! doctors.csv              one record per card (header: see DOCTORS_CSV_HEADER)
//! ca/<ca>.pem, ca/<ca>.key CA certificates and their PKCS#8 keys:
//!                          root, jma-ca, jma-ca-2, unknown-root, tls-root
//! crl/root.crl             empty CRL of the root (DER)
//! crl/jma-ca.crl           CRL of the JMA CA: the `revoked` card + two fictitious serials
//! crl/jma-ca-2.crl         empty CRL of JMA CA 2
//! server/server.pem, .key  TLS server cert for localhost (127.0.0.1, ::1), by tls-root
//! cards/<name>/auth.pem    authentication certificate
//! cards/<name>/auth.key    its PKCS#8 key (unencrypted, test only)
//! cards/<name>/chain.pem   what the client should send: leaf + intermediates
//! cards/<name>/auth.p12    PKCS#12 (password = PIN): key, leaf, intermediates
//! cards/<name>/sign.pem    signing certificate (good cards only)
//! cards/<name>/sign.key    its key
//! softhsm/softhsm2.conf    only with Options::softhsm: SoftHSM2 config + tokens/
//! ```
//!
//! Same seed and issued_at give byte-identical PEM, DER, CRL, CSV and JSON files.
//! PKCS#12 files and SoftHSM tokens contain random salts/IVs and differ between runs.
//!
//! # SoftHSM2 and `SOFTHSM2_CONF`
//! SoftHSM2 reads its configuration file from the `SOFTHSM2_CONF` environment variable (or
//! `/etc/softhsm/softhsm2.conf`) when the module is initialised (`C_Initialize`); cryptoki
//! offers no other way to pass it. Setting an environment variable is `unsafe` in
//! edition 2024 and this workspace forbids `unsafe`, so this crate never sets it: when
//! [`Options::softhsm`] is set, the caller's process must already have
//! `SOFTHSM2_CONF=<absolute out_dir>/softhsm/softhsm2.conf` (see [`softhsm_conf_path`]).
//! [`generate`] writes that file first, then returns [`Error::SoftHsmConfEnv`] (naming the
//! exact value) if the variable is missing or points elsewhere.

mod cards;
mod der;
mod pki;
mod readme;
mod softhsm;

use rcgen::{
    CertificateParams, CertificateRevocationListParams, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

use crate::cards::{CardDef, CardKind};
use crate::pki::{Ca, HcRoleExt, KeyMaterial, LeafProfile};

pub use rcgen::RevocationReason;

/// ISO 17090 `id-hcpki-at-healthcareActor`: the attribute type inside subjectDirectoryAttributes.
pub const OID_HC_ACTOR: &str = "1.0.17090.0.1";
/// The Japanese HPKI hcRole coding scheme (codingSchemeReference inside CodedData).
pub const OID_HC_ROLE_SCHEME: &str = "1.2.392.100495.1.6.1.1";
/// Test certificate policy of authentication (認証用) certificates.
pub const TEST_AUTH_POLICY_OID: &str = "2.999.392.1.1";
/// Test certificate policy of signing (署名用) certificates.
pub const TEST_SIGN_POLICY_OID: &str = "2.999.392.1.2";
/// The policy carried by the `wrong-policy` card.
pub const WRONG_POLICY_OID: &str = "2.999.392.9.9";
/// subjectDirectoryAttributes extension OID.
pub const OID_SUBJECT_DIRECTORY_ATTRIBUTES: &str = "2.5.29.9";
/// The PIN of every card (PKCS#12 password and SoftHSM user PIN).
pub const DEFAULT_PIN: &str = "123456";
/// The SoftHSM security-officer PIN of every token.
pub const SOFTHSM_SO_PIN: &str = "12345678";
/// Header of `doctors.csv`.
pub const DOCTORS_CSV_HEADER: &str = cards::CSV_HEADER;

pub(crate) const HC_ACTOR_ARCS: &[u64] = &[1, 0, 17090, 0, 1];
pub(crate) const HC_ROLE_SCHEME_ARCS: &[u64] = &[1, 2, 392, 100495, 1, 6, 1, 1];

const CRL_BASE_URL: &str = "http://crl.test.invalid";

/// Errors; each carries the file, card or object it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating RSA key {label:?}: {message}")]
    Key { label: String, message: String },
    #[error("building {what}: {message}")]
    Cert { what: String, message: String },
    #[error("PKCS#12 for card {card:?}: {message}")]
    Pkcs12 { card: String, message: String },
    #[error("SoftHSM ({context}): {message}")]
    SoftHsm { context: String, message: String },
    #[error(
        "SOFTHSM2_CONF must be set to {expected} in the environment of this process before \
         generating SoftHSM tokens (found {found:?}); the file has been written, so run again \
         with SOFTHSM2_CONF={expected}"
    )]
    SoftHsmConfEnv {
        expected: PathBuf,
        found: Option<std::ffi::OsString>,
    },
    #[error("JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no CA named {0:?} in the manifest")]
    UnknownCa(String),
    #[error("no card named {0:?} in the manifest")]
    UnknownCard(String),
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn cert(what: &str, e: impl std::fmt::Display) -> Self {
        Error::Cert {
            what: what.to_owned(),
            message: e.to_string(),
        }
    }
}

/// Where SoftHSM2 lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftHsm {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Everything (keys, serials) derives from this.
    pub seed: String,
    /// The reference time; validity periods derive from it, never from the clock.
    pub issued_at: OffsetDateTime,
    pub out_dir: PathBuf,
    /// Create one SoftHSM2 token per card (requires `SOFTHSM2_CONF`, see the crate docs).
    pub softhsm: Option<SoftHsm>,
    /// nextUpdate of the generated CRLs; default issued_at + 10 years.
    pub crl_next_update: Option<OffsetDateTime>,
}

impl Options {
    /// Options with the defaults: no SoftHSM, CRLs valid 10 years.
    pub fn new(
        seed: impl Into<String>,
        issued_at: OffsetDateTime,
        out_dir: impl Into<PathBuf>,
    ) -> Self {
        Options {
            seed: seed.into(),
            issued_at,
            out_dir: out_dir.into(),
            softhsm: None,
            crl_next_update: None,
        }
    }
}

/// `manifest.json`. All paths are relative to the output directory (see [`Manifest::path`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub seed: String,
    /// RFC 3339.
    pub issued_at: String,
    pub trust: TrustFiles,
    pub server: ServerFiles,
    pub cas: Vec<CaFiles>,
    pub cards: Vec<Card>,
    pub doctors_csv: String,
    pub softhsm: Option<SoftHsmFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustFiles {
    pub anchors: Vec<String>,
    pub intermediates: Vec<String>,
    pub crls: Vec<String>,
    pub auth_policy_oid: String,
    pub sign_policy_oid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFiles {
    /// Server leaf certificate (PEM, leaf only; the TLS root is `ca`).
    pub cert: String,
    /// PKCS#8 PEM.
    pub key: String,
    /// The TLS root CA clients should trust.
    pub ca: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaFiles {
    /// root, jma-ca, jma-ca-2, unknown-root, tls-root.
    pub name: String,
    pub common_name: String,
    pub cert: String,
    pub key: String,
    pub crl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub name: String,
    pub good: bool,
    /// Refusal code the IdP must give for this card (None for good cards).
    pub expect: Option<String>,
    pub pin: String,
    pub holder_id: Option<String>,
    pub common_name: String,
    pub roles: Vec<String>,
    /// Authentication certificate (PEM).
    pub cert: String,
    /// Its private key (PKCS#8 PEM, unencrypted; test only).
    pub key: String,
    /// What the client should send: leaf + intermediates (PEM).
    pub chain: String,
    /// PKCS#12, password = pin: key, cert and intermediates.
    pub p12: String,
    /// SoftHSM token label (= card name) when tokens were made.
    pub token_label: Option<String>,
    /// Serial number of the authentication certificate, lowercase hex.
    pub serial: String,
    /// Name of the issuing CA in `cas` (or "self" for the self-signed card).
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// Signing certificate (good cards only).
    pub sign_cert: Option<String>,
    pub sign_key: Option<String>,
    /// Why the card is bad (or what it is).
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftHsmFiles {
    /// softhsm2.conf (relative); SOFTHSM2_CONF must point at its absolute path.
    pub conf: String,
    pub tokens_dir: String,
    /// Absolute path of the PKCS#11 module used.
    pub module: String,
    pub so_pin: String,
}

impl Manifest {
    pub fn card(&self, name: &str) -> Option<&Card> {
        self.cards.iter().find(|c| c.name == name)
    }

    pub fn ca(&self, name: &str) -> Option<&CaFiles> {
        self.cas.iter().find(|c| c.name == name)
    }

    /// `base.join(rel)`.
    pub fn path(&self, base: &Path, rel: &str) -> PathBuf {
        base.join(rel)
    }

    /// Reads `<dir>/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest, Error> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
    }
}

/// The first existing of the usual SoftHSM2 module locations.
pub fn default_softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
        "/opt/homebrew/lib/softhsm/libsofthsm2.so",
        "/usr/local/opt/softhsm/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Absolute path of the SoftHSM2 config `generate` writes for `out_dir`; the value
/// `SOFTHSM2_CONF` must have. Fails only if the current directory cannot be read.
pub fn softhsm_conf_path(out_dir: &Path) -> Result<PathBuf, Error> {
    Ok(absolute(out_dir)?.join("softhsm").join("softhsm2.conf"))
}

/// `("SOFTHSM2_CONF", value)` for `out_dir`, for `Command::env` or a shell export.
pub fn softhsm_env(out_dir: &Path) -> Result<(&'static str, PathBuf), Error> {
    Ok(("SOFTHSM2_CONF", softhsm_conf_path(out_dir)?))
}

fn absolute(p: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(p).map_err(|source| Error::Io {
        path: p.to_owned(),
        source,
    })
}

/// The subjectDirectoryAttributes extension value carrying one HCActor per display name:
/// `SEQUENCE { SEQUENCE { OID 1.0.17090.0.1, SET { SET OF HCActor } } }` with
/// `HCActor ::= SEQUENCE { [0] EXPLICIT SET { [0] EXPLICIT OID 1.2.392.100495.1.6.1.1,
/// [2] EXPLICIT UTF8String name } }`. The HCActors are sorted by encoding (DER SET OF).
pub fn hc_role_extension_der(actors: &[&str]) -> Vec<u8> {
    let actors = actors
        .iter()
        .map(|name| {
            let coded = der::tlv(
                der::TAG_SET,
                &der::cat(&[
                    der::explicit(0, &der::oid(HC_ROLE_SCHEME_ARCS)),
                    der::explicit(2, &der::utf8(name)),
                ]),
            );
            der::sequence(&[der::explicit(0, &coded)])
        })
        .collect();
    let actor_data = der::set_of(actors);
    let values = der::set_of(vec![actor_data]);
    der::sequence(&[der::sequence(&[der::oid(HC_ACTOR_ARCS), values])])
}

/// DER content octets (no tag/length) of a dotted OID, e.g. to compare with
/// `x509_parser`'s `Oid::as_bytes()`. None if `dotted` is not a valid OID.
///
/// Use this (or [`oid_string_from_der`]) for the test policy OIDs: they live under 2.999,
/// and asn1-rs 0.7 (x509-parser 0.18) mis-decodes OIDs whose first two arcs are 2.48 or
/// more (`Oid::to_id_string()` gives "3.16.55.392.1.1" for 2.999.392.1.1, and
/// `Oid::from_str("2.999.392.1.1")` fails).
pub fn oid_der_content(dotted: &str) -> Option<Vec<u8>> {
    der::parse_oid(dotted).map(|arcs| der::oid_content(&arcs))
}

/// Dotted form of OID content octets, correct for every first arc (see [`oid_der_content`]).
pub fn oid_string_from_der(content: &[u8]) -> Option<String> {
    der::oid_content_to_string(content)
}

/// One CRL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number, big-endian unsigned bytes.
    pub serial: Vec<u8>,
    pub revoked_at: OffsetDateTime,
    pub reason: Option<RevocationReason>,
}

impl Revocation {
    /// Revokes a card's authentication certificate (reason keyCompromise).
    pub fn card(
        manifest: &Manifest,
        name: &str,
        revoked_at: OffsetDateTime,
    ) -> Result<Self, Error> {
        let card = manifest
            .card(name)
            .ok_or_else(|| Error::UnknownCard(name.to_owned()))?;
        let serial = hex::decode(&card.serial)
            .map_err(|e| Error::Invalid(format!("serial of card {name:?}: {e}")))?;
        Ok(Revocation {
            serial,
            revoked_at,
            reason: Some(RevocationReason::KeyCompromise),
        })
    }
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, Error> {
    r.map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(out: &Path, rel: &str, bytes: impl AsRef<[u8]>) -> Result<(), Error> {
    let path = out.join(rel);
    if let Some(parent) = path.parent() {
        io(parent, std::fs::create_dir_all(parent))?;
    }
    io(&path, std::fs::write(&path, bytes))
}

fn rfc3339(t: OffsetDateTime) -> Result<String, Error> {
    t.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Invalid(format!("formatting time {t}: {e}")))
}

fn crl_der(
    what: &str,
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    revoked: &[Revocation],
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    crl_number: u64,
) -> Result<Vec<u8>, Error> {
    let params = CertificateRevocationListParams {
        this_update: pki::normalise(this_update),
        next_update: pki::normalise(next_update),
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: pki::normalise(r.revoked_at),
                reason_code: r.reason,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(issuer).map_err(|e| Error::cert(what, e))?;
    Ok(crl.der().to_vec())
}

/// Signs a CRL for `ca` ("root", "jma-ca", "jma-ca-2", "unknown-root", "tls-root") with the
/// CA key stored under `out_dir`, and returns its DER. Use it to revoke a card at run time or
/// to make a stale CRL (next_update in the past).
pub fn issue_crl_der(
    out_dir: &Path,
    manifest: &Manifest,
    ca: &str,
    revoked: &[Revocation],
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    crl_number: u64,
) -> Result<Vec<u8>, Error> {
    let files = manifest
        .ca(ca)
        .ok_or_else(|| Error::UnknownCa(ca.to_owned()))?;
    let cert_path = out_dir.join(&files.cert);
    let key_path = out_dir.join(&files.key);
    let cert_pem = io(&cert_path, std::fs::read_to_string(&cert_path))?;
    let key_pem = io(&key_path, std::fs::read_to_string(&key_path))?;
    let key = pki::load_key(&key_path, &key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| Error::Cert {
        what: format!("loading CA certificate {}", cert_path.display()),
        message: e.to_string(),
    })?;
    crl_der(
        &format!("CRL of {ca}"),
        &issuer,
        revoked,
        this_update,
        next_update,
        crl_number,
    )
}

/// Like [`issue_crl_der`], and writes the result to `crl/<ca>.crl` under `out_dir`
/// (overwriting the generated one, so paths in `trust.crls` stay valid). Returns the path.
pub fn issue_crl(
    out_dir: &Path,
    manifest: &Manifest,
    ca: &str,
    revoked: &[Revocation],
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    crl_number: u64,
) -> Result<PathBuf, Error> {
    let der = issue_crl_der(
        out_dir,
        manifest,
        ca,
        revoked,
        this_update,
        next_update,
        crl_number,
    )?;
    let rel = format!("crl/{ca}.crl");
    write(out_dir, &rel, der)?;
    Ok(out_dir.join(rel))
}

fn crl_url(ca: &str) -> String {
    format!("{CRL_BASE_URL}/{ca}.crl")
}

fn auth_profile(roles: &[&str], issuer_ca: &str) -> LeafProfile {
    LeafProfile {
        key_usages: vec![KeyUsagePurpose::DigitalSignature],
        ekus: vec![ExtendedKeyUsagePurpose::ClientAuth],
        policy: Some(TEST_AUTH_POLICY_OID.to_owned()),
        hc_role: HcRoleExt::Roles(roles.iter().map(|s| (*s).to_owned()).collect()),
        crl_dp: Some(crl_url(issuer_ca)),
        sans: Vec::new(),
    }
}

fn sign_profile(roles: &[&str], issuer_ca: &str) -> LeafProfile {
    LeafProfile {
        key_usages: vec![KeyUsagePurpose::ContentCommitment],
        ekus: Vec::new(),
        policy: Some(TEST_SIGN_POLICY_OID.to_owned()),
        hc_role: HcRoleExt::Roles(roles.iter().map(|s| (*s).to_owned()).collect()),
        crl_dp: Some(crl_url(issuer_ca)),
        sans: Vec::new(),
    }
}

/// Names and keys of the CAs in one generated PKI.
struct Cas {
    root: Ca,
    jma: Ca,
    jma2: Ca,
    unknown: Ca,
    tls: Ca,
}

fn hpki_dn(cn: &str, what: &str) -> Result<rcgen::DistinguishedName, Error> {
    pki::dn(what, true, Some("HPKI Test"), None, cn, None)
}

fn make_cas(seed: &str, t: OffsetDateTime) -> Result<Cas, Error> {
    let root_params = pki::ca_params(
        hpki_dn("HPKI Test Root CA", "root")?,
        pki::add_years(t, -1),
        pki::add_years(t, 20),
        pki::serial(seed, "ca/root"),
        None,
        None,
    );
    let root = pki::self_signed_ca("root", root_params, pki::derive_key(seed, "ca/root")?)?;

    let jma_dn = |cn: &str, what: &str| {
        pki::dn(
            what,
            true,
            Some("HPKI Test"),
            Some("日本医師会電子認証センター"),
            cn,
            None,
        )
    };
    // Two issuing CAs under the root; only the first is configured as an intermediate.
    let issuing_ca = |name: &'static str, cn: &str| -> Result<_, Error> {
        let params = pki::ca_params(
            jma_dn(cn, name)?,
            pki::add_years(t, -1),
            pki::add_years(t, 10),
            pki::serial(seed, &format!("ca/{name}")),
            Some(0),
            Some(&crl_url("root")),
        );
        pki::sub_ca(
            name,
            params,
            pki::derive_key(seed, &format!("ca/{name}"))?,
            &root,
        )
    };
    let jma = issuing_ca("jma-ca", "HPKI Test JMA CA")?;
    let jma2 = issuing_ca("jma-ca-2", "HPKI Test JMA CA 2")?;

    // Roots outside the HPKI trust: an unknown CA's root, and the TLS server root.
    let other_root = |name: &'static str, org: &str, cn: &str| -> Result<_, Error> {
        let params = pki::ca_params(
            pki::dn(name, true, Some(org), None, cn, None)?,
            pki::add_years(t, -1),
            pki::add_years(t, 20),
            pki::serial(seed, &format!("ca/{name}")),
            None,
            None,
        );
        pki::self_signed_ca(name, params, pki::derive_key(seed, &format!("ca/{name}"))?)
    };
    let unknown = other_root("unknown-root", "Unknown Test", "Unknown Test Root CA")?;
    let tls = other_root("tls-root", "IdP Dev", "Test TLS Root CA")?;
    Ok(Cas {
        root,
        jma,
        jma2,
        unknown,
        tls,
    })
}

fn sign_leaf(
    what: &str,
    params: &CertificateParams,
    subject: &KeyPair,
    issuer: Option<&Ca>,
) -> Result<rcgen::Certificate, Error> {
    match issuer {
        Some(ca) => params.signed_by(subject, &ca.issuer),
        None => params.self_signed(subject),
    }
    .map_err(|e| Error::cert(what, e))
}

/// Everything about one generated card needed after the files are written (SoftHSM).
pub(crate) struct CardOut {
    pub(crate) name: String,
    pub(crate) pin: String,
    pub(crate) auth_key: KeyMaterial,
    pub(crate) auth_der: Vec<u8>,
    pub(crate) sign: Option<(KeyMaterial, Vec<u8>)>,
}

impl std::fmt::Debug for CardOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardOut").field("name", &self.name).finish()
    }
}

fn p12(
    card: &str,
    key_der: &[u8],
    leaf_der: &[u8],
    chain: &[&[u8]],
    password: &str,
) -> Result<Vec<u8>, Error> {
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkcs12::Pkcs12;
    use openssl::pkey::PKey;
    use openssl::stack::Stack;
    use openssl::x509::X509;
    let err = |e: openssl::error::ErrorStack| Error::Pkcs12 {
        card: card.to_owned(),
        message: e.to_string(),
    };
    let pkey = PKey::private_key_from_pkcs8(key_der).map_err(err)?;
    let cert = X509::from_der(leaf_der).map_err(err)?;
    let mut builder = Pkcs12::builder();
    builder
        .name(card)
        .pkey(&pkey)
        .cert(&cert)
        .key_algorithm(Nid::AES_256_CBC)
        .cert_algorithm(Nid::AES_256_CBC)
        .mac_md(MessageDigest::sha256());
    if !chain.is_empty() {
        let mut stack = Stack::new().map_err(err)?;
        for der in chain {
            stack.push(X509::from_der(der).map_err(err)?).map_err(err)?;
        }
        builder.ca(stack);
    }
    let p12 = builder.build2(password).map_err(err)?;
    p12.to_der().map_err(err)
}

/// Generates the whole test PKI into `opts.out_dir` and returns the manifest (also written
/// as `manifest.json`). Existing files with the same names are overwritten; when SoftHSM is
/// enabled, `softhsm/tokens` is emptied first.
pub fn generate(opts: &Options) -> Result<Manifest, Error> {
    let out = opts.out_dir.as_path();
    io(out, std::fs::create_dir_all(out))?;
    let seed = opts.seed.as_str();
    let t = pki::normalise(opts.issued_at);
    let crl_next = opts
        .crl_next_update
        .map(pki::normalise)
        .unwrap_or_else(|| pki::add_years(t, 10));
    if crl_next <= t {
        return Err(Error::Invalid(format!(
            "crl_next_update {crl_next} must be after issued_at {t}"
        )));
    }

    // Check the SoftHSM environment before spending time on keys.
    if let Some(hsm) = &opts.softhsm {
        softhsm::prepare(out, hsm)?;
    }

    let cas = make_cas(seed, t)?;
    let mut ca_files = Vec::new();
    for (ca, cn) in [
        (&cas.root, "HPKI Test Root CA"),
        (&cas.jma, "HPKI Test JMA CA"),
        (&cas.jma2, "HPKI Test JMA CA 2"),
        (&cas.unknown, "Unknown Test Root CA"),
        (&cas.tls, "Test TLS Root CA"),
    ] {
        let cert = format!("ca/{}.pem", ca.name);
        let key = format!("ca/{}.key", ca.name);
        write(out, &cert, ca.pem())?;
        write(out, &key, &ca.key_pem)?;
        let crl = matches!(ca.name, "root" | "jma-ca" | "jma-ca-2")
            .then(|| format!("crl/{}.crl", ca.name));
        ca_files.push(CaFiles {
            name: ca.name.to_owned(),
            common_name: cn.to_owned(),
            cert,
            key,
            crl,
        });
    }

    // TLS server certificate for localhost.
    let server_key = pki::derive_ec_key(seed, "server/localhost")?;
    let server_profile = LeafProfile {
        key_usages: vec![KeyUsagePurpose::DigitalSignature],
        ekus: vec![ExtendedKeyUsagePurpose::ServerAuth],
        policy: None,
        hc_role: HcRoleExt::Absent,
        crl_dp: None,
        sans: vec![
            SanType::DnsName(
                "localhost"
                    .try_into()
                    .map_err(|e| Error::cert("server SAN", e))?,
            ),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ],
    };
    let server_params = pki::leaf_params(
        "server",
        pki::dn("server", true, Some("IdP Dev"), None, "localhost", None)?,
        pki::add_years(t, -1),
        pki::add_years(t, 10),
        pki::serial(seed, "server/localhost"),
        &server_profile,
    )?;
    let server_cert = sign_leaf(
        "server",
        &server_params,
        &server_key.keypair,
        Some(&cas.tls),
    )?;
    write(out, "server/server.pem", server_cert.pem())?;
    write(out, "server/server.key", &server_key.pkcs8_pem)?;

    // Cards.
    let defs = cards::all();
    let mut manifest_cards = Vec::new();
    let mut card_outs = Vec::new();
    let mut revoked_serial = None;
    for def in &defs {
        let (card, card_out) = make_card(out, seed, t, def, &cas, opts.softhsm.is_some())?;
        if def.kind == CardKind::Revoked {
            revoked_serial = Some(
                hex::decode(&card.serial)
                    .map_err(|e| Error::Invalid(format!("serial of {}: {e}", def.name)))?,
            );
        }
        manifest_cards.push(card);
        card_outs.push(card_out);
    }

    // CRLs.
    let mut jma_revoked = Vec::new();
    if let Some(serial) = revoked_serial {
        jma_revoked.push(Revocation {
            serial,
            revoked_at: t,
            reason: Some(RevocationReason::KeyCompromise),
        });
    }
    jma_revoked.push(Revocation {
        serial: pki::serial(seed, "fictitious/1"),
        revoked_at: t - Duration::days(100),
        reason: Some(RevocationReason::Superseded),
    });
    jma_revoked.push(Revocation {
        serial: pki::serial(seed, "fictitious/2"),
        revoked_at: t - Duration::days(40),
        reason: Some(RevocationReason::CessationOfOperation),
    });
    write(
        out,
        "crl/root.crl",
        crl_der("root CRL", &cas.root.issuer, &[], t, crl_next, 1)?,
    )?;
    write(
        out,
        "crl/jma-ca.crl",
        crl_der("jma-ca CRL", &cas.jma.issuer, &jma_revoked, t, crl_next, 1)?,
    )?;
    write(
        out,
        "crl/jma-ca-2.crl",
        crl_der("jma-ca-2 CRL", &cas.jma2.issuer, &[], t, crl_next, 1)?,
    )?;

    write(out, "doctors.csv", cards::csv(&defs))?;
    write(out, "README.md", readme::text(&defs))?;

    let softhsm_files = match &opts.softhsm {
        Some(hsm) => Some(softhsm::create_tokens(hsm, &card_outs)?),
        None => None,
    };

    let manifest = Manifest {
        seed: seed.to_owned(),
        issued_at: rfc3339(t)?,
        trust: TrustFiles {
            anchors: vec!["ca/root.pem".into()],
            intermediates: vec!["ca/jma-ca.pem".into()],
            crls: vec!["crl/root.crl".into(), "crl/jma-ca.crl".into()],
            auth_policy_oid: TEST_AUTH_POLICY_OID.into(),
            sign_policy_oid: TEST_SIGN_POLICY_OID.into(),
        },
        server: ServerFiles {
            cert: "server/server.pem".into(),
            key: "server/server.key".into(),
            ca: "ca/tls-root.pem".into(),
        },
        cas: ca_files,
        cards: manifest_cards,
        doctors_csv: "doctors.csv".into(),
        softhsm: softhsm_files,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| Error::Json {
        path: out.join("manifest.json"),
        source,
    })?;
    write(out, "manifest.json", json)?;
    Ok(manifest)
}

fn make_card(
    out: &Path,
    seed: &str,
    t: OffsetDateTime,
    def: &CardDef,
    cas: &Cas,
    token: bool,
) -> Result<(Card, CardOut), Error> {
    let name = def.name;
    let what = format!("card {name:?}");
    let dir = format!("cards/{name}");
    let cn = def.common_name();
    let subject = pki::dn(&what, true, None, None, &cn, Some(def.holder_id))?;
    let roles = def.roles;

    let (issuer, issuer_name): (Option<&Ca>, &str) = match def.kind {
        CardKind::UnknownCa => (Some(&cas.unknown), "unknown-root"),
        CardKind::SelfSigned => (None, "self"),
        CardKind::IntermediateMissing => (Some(&cas.jma2), "jma-ca-2"),
        _ => (Some(&cas.jma), "jma-ca"),
    };
    let (not_before, not_after) = match def.kind {
        CardKind::Expired => (pki::add_years(t, -6), pki::add_years(t, -1)),
        CardKind::NotYetValid => (pki::add_years(t, 1), pki::add_years(t, 6)),
        _ => (t, pki::add_years(t, 5)),
    };
    let mut profile = auth_profile(roles, issuer_name);
    match def.kind {
        CardKind::SigningCert => profile = sign_profile(roles, issuer_name),
        CardKind::WrongEku => profile.ekus = vec![ExtendedKeyUsagePurpose::EmailProtection],
        CardKind::NoHcRole => profile.hc_role = HcRoleExt::Absent,
        CardKind::MalformedHcRole => profile.hc_role = HcRoleExt::Malformed,
        CardKind::WrongPolicy => profile.policy = Some(WRONG_POLICY_OID.to_owned()),
        CardKind::SelfSigned => profile.crl_dp = None,
        _ => {}
    }

    let auth_label = format!("card/{name}/auth");
    let auth_key = pki::derive_key(seed, &auth_label)?;
    let serial = pki::serial(seed, &auth_label);
    let params = pki::leaf_params(
        &what,
        subject.clone(),
        not_before,
        not_after,
        serial.clone(),
        &profile,
    )?;
    let cert = sign_leaf(&what, &params, &auth_key.keypair, issuer)?;
    let auth_der = cert.der().to_vec();
    let auth_pem = cert.pem();

    // What the client sends: leaf + the intermediate it chains through (never the anchor of
    // the trusted hierarchy). The unknown-CA card sends its own (untrusted) root too.
    let chain_certs: Vec<(&[u8], String)> = match def.kind {
        CardKind::SelfSigned | CardKind::IntermediateMissing => Vec::new(),
        CardKind::UnknownCa => vec![(cas.unknown.der(), cas.unknown.pem())],
        _ => vec![(cas.jma.der(), cas.jma.pem())],
    };
    let mut chain_pem = auth_pem.clone();
    for (_, pem) in &chain_certs {
        chain_pem.push_str(pem);
    }

    let pin = DEFAULT_PIN.to_owned();
    let rel = |f: &str| format!("{dir}/{f}");
    write(out, &rel("auth.pem"), &auth_pem)?;
    write(out, &rel("auth.key"), &auth_key.pkcs8_pem)?;
    write(out, &rel("chain.pem"), &chain_pem)?;
    let chain_der: Vec<&[u8]> = chain_certs.iter().map(|(d, _)| *d).collect();
    write(
        out,
        &rel("auth.p12"),
        p12(name, &auth_key.pkcs8_der, &auth_der, &chain_der, &pin)?,
    )?;

    let mut sign = None;
    if def.good() {
        let sign_label = format!("card/{name}/sign");
        let sign_key = pki::derive_key(seed, &sign_label)?;
        let sp = pki::leaf_params(
            &format!("{what} signing certificate"),
            subject,
            not_before,
            not_after,
            pki::serial(seed, &sign_label),
            &sign_profile(roles, issuer_name),
        )?;
        let sc = sign_leaf(&what, &sp, &sign_key.keypair, issuer)?;
        write(out, &rel("sign.pem"), sc.pem())?;
        write(out, &rel("sign.key"), &sign_key.pkcs8_pem)?;
        sign = Some((sign_key, sc.der().to_vec()));
    }

    let card = Card {
        name: name.to_owned(),
        good: def.good(),
        expect: def.expect.map(str::to_owned),
        pin: pin.clone(),
        holder_id: Some(def.holder_id.to_owned()),
        common_name: cn,
        roles: roles.iter().map(|s| (*s).to_owned()).collect(),
        cert: rel("auth.pem"),
        key: rel("auth.key"),
        chain: rel("chain.pem"),
        p12: rel("auth.p12"),
        token_label: token.then(|| name.to_owned()),
        serial: hex::encode(&serial),
        issuer: issuer_name.to_owned(),
        not_before: rfc3339(not_before)?,
        not_after: rfc3339(not_after)?,
        sign_cert: def.good().then(|| rel("sign.pem")),
        sign_key: def.good().then(|| rel("sign.key")),
        description: def.why.to_owned(),
    };
    Ok((
        card,
        CardOut {
            name: name.to_owned(),
            pin,
            auth_key,
            auth_der,
            sign,
        },
    ))
}

/// What [`large_crl`] wrote (absolute paths, i.e. joined onto `out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeCrl {
    /// Trust anchor "Bench Test Root CA" (PEM).
    pub root: PathBuf,
    /// Issuing CA "Bench Test Issuing CA" (PEM), pathlen 0.
    pub intermediate: PathBuf,
    /// Empty CRL of the root (DER), needed to check the intermediate.
    pub root_crl: PathBuf,
    /// CRL of the issuing CA (DER) with `entries` revoked serials (the leaf is not among them).
    pub crl: PathBuf,
    /// Good leaf: authentication profile, hcRole Medical Doctor, TEST_AUTH_POLICY_OID.
    pub leaf_cert: PathBuf,
    pub leaf_key: PathBuf,
    /// Leaf + issuing CA (PEM).
    pub leaf_chain: PathBuf,
    pub entries: usize,
    /// Serial of the leaf, lowercase hex.
    pub leaf_serial: String,
}

/// For benchmarks. Writes, under `out`:
/// `ca/root.pem|key` (Bench Test Root CA), `ca/issuing-ca.pem|key` (Bench Test Issuing CA),
/// `crl/root.crl` (empty), `crl/issuing-ca.crl` (`entries` revoked serials
/// `10 ‖ hash-prefix(7) ‖ counter(8)`, reason keyCompromise), and `leaf/leaf.pem|key`,
/// `leaf/chain.pem` (a good authentication certificate with hcRole "Medical Doctor" and
/// holder id BENCH-000001). Validity as in [`generate`]: CAs issued_at-1y..+20y/+10y, leaf
/// issued_at..+5y; CRL thisUpdate issued_at, nextUpdate issued_at+10y. Deterministic.
pub fn large_crl(
    out: &Path,
    seed: &str,
    issued_at: OffsetDateTime,
    entries: usize,
) -> Result<LargeCrl, Error> {
    let t = pki::normalise(issued_at);
    io(out, std::fs::create_dir_all(out))?;
    let root_params = pki::ca_params(
        pki::dn(
            "bench root",
            true,
            Some("HPKI Test"),
            None,
            "Bench Test Root CA",
            None,
        )?,
        pki::add_years(t, -1),
        pki::add_years(t, 20),
        pki::serial(seed, "bench/root"),
        None,
        None,
    );
    let root = pki::self_signed_ca("root", root_params, pki::derive_key(seed, "bench/root")?)?;
    let ica_params = pki::ca_params(
        pki::dn(
            "bench issuing CA",
            true,
            Some("HPKI Test"),
            None,
            "Bench Test Issuing CA",
            None,
        )?,
        pki::add_years(t, -1),
        pki::add_years(t, 10),
        pki::serial(seed, "bench/issuing-ca"),
        Some(0),
        Some(&crl_url("bench-root")),
    );
    let ica = pki::sub_ca(
        "issuing-ca",
        ica_params,
        pki::derive_key(seed, "bench/issuing-ca")?,
        &root,
    )?;
    let leaf_key = pki::derive_key(seed, "bench/leaf")?;
    let leaf_serial = pki::serial(seed, "bench/leaf");
    let leaf_params = pki::leaf_params(
        "bench leaf",
        pki::dn(
            "bench leaf",
            true,
            None,
            None,
            "日医\u{3000}太郎",
            Some("BENCH-000001"),
        )?,
        t,
        pki::add_years(t, 5),
        leaf_serial.clone(),
        &auth_profile(&["Medical Doctor"], "bench-issuing-ca"),
    )?;
    let leaf = sign_leaf("bench leaf", &leaf_params, &leaf_key.keypair, Some(&ica))?;

    let prefix = pki::serial(seed, "bench/crl-prefix");
    let revoked: Vec<Revocation> = (0..entries as u64)
        .map(|i| {
            let mut serial = Vec::with_capacity(16);
            serial.push(0x10);
            serial.extend_from_slice(&prefix[1..8]);
            serial.extend_from_slice(&i.to_be_bytes());
            Revocation {
                serial,
                revoked_at: t - Duration::seconds(i64::try_from(i % 86_400).unwrap_or(0)),
                reason: Some(RevocationReason::KeyCompromise),
            }
        })
        .collect();
    let next = pki::add_years(t, 10);

    write(out, "ca/root.pem", root.pem())?;
    write(out, "ca/root.key", &root.key_pem)?;
    write(out, "ca/issuing-ca.pem", ica.pem())?;
    write(out, "ca/issuing-ca.key", &ica.key_pem)?;
    write(
        out,
        "crl/root.crl",
        crl_der("bench root CRL", &root.issuer, &[], t, next, 1)?,
    )?;
    write(
        out,
        "crl/issuing-ca.crl",
        crl_der("bench issuing CA CRL", &ica.issuer, &revoked, t, next, 1)?,
    )?;
    write(out, "leaf/leaf.pem", leaf.pem())?;
    write(out, "leaf/leaf.key", &leaf_key.pkcs8_pem)?;
    write(
        out,
        "leaf/chain.pem",
        format!("{}{}", leaf.pem(), ica.pem()),
    )?;
    Ok(LargeCrl {
        root: out.join("ca/root.pem"),
        intermediate: out.join("ca/issuing-ca.pem"),
        root_crl: out.join("crl/root.crl"),
        crl: out.join("crl/issuing-ca.crl"),
        leaf_cert: out.join("leaf/leaf.pem"),
        leaf_key: out.join("leaf/leaf.key"),
        leaf_chain: out.join("leaf/chain.pem"),
        entries,
        leaf_serial: hex::encode(leaf_serial),
    })
}

#[cfg(test)]
mod tests;
