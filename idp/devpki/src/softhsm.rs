//! SoftHSM2 tokens, one per card, created through cryptoki (PKCS#11) only.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, CertificateType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use openssl::pkey::PKey;
use openssl::x509::X509;
use std::path::{Path, PathBuf};

use crate::pki::KeyMaterial;
use crate::{CardOut, Error, SOFTHSM_SO_PIN, SoftHsm, SoftHsmFiles, der, io, write};

const CONF_REL: &str = "softhsm/softhsm2.conf";
const TOKENS_REL: &str = "softhsm/tokens";

fn hsm_err(context: impl Into<String>) -> impl FnOnce(cryptoki::error::Error) -> Error {
    let context = context.into();
    move |e| Error::SoftHsm {
        context,
        message: e.to_string(),
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Writes `softhsm/softhsm2.conf`, checks `SOFTHSM2_CONF` points at it, and empties the
/// token directory.
pub(crate) fn prepare(out: &Path, hsm: &SoftHsm) -> Result<(), Error> {
    if !hsm.module.is_file() {
        return Err(Error::SoftHsm {
            context: "module".into(),
            message: format!("PKCS#11 module {} does not exist", hsm.module.display()),
        });
    }
    let conf = crate::softhsm_conf_path(out)?;
    let tokens = crate::absolute(&out.join(TOKENS_REL))?;
    let text = format!(
        "# SoftHSM2 configuration written by idp-devpki. Use with SOFTHSM2_CONF={}\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n",
        conf.display(),
        tokens.display()
    );
    write(out, CONF_REL, text)?;
    let found = std::env::var_os("SOFTHSM2_CONF");
    let ok = found
        .as_ref()
        .is_some_and(|f| same_path(Path::new(f), &conf));
    if !ok {
        return Err(Error::SoftHsmConfEnv {
            expected: conf,
            found,
        });
    }
    if tokens.exists() {
        io(&tokens, std::fs::remove_dir_all(&tokens))?;
    }
    io(&tokens, std::fs::create_dir_all(&tokens))?;
    Ok(())
}

fn free_slot(ctx: &Pkcs11) -> Result<Slot, Error> {
    for slot in ctx
        .get_slots_with_token()
        .map_err(hsm_err("C_GetSlotList"))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(hsm_err("C_GetTokenInfo"))?;
        if !info.token_initialized() {
            return Ok(slot);
        }
    }
    Err(Error::SoftHsm {
        context: "C_GetSlotList".into(),
        message: "no free (uninitialised) slot".into(),
    })
}

fn slot_by_label(ctx: &Pkcs11, label: &str) -> Result<Slot, Error> {
    for slot in ctx
        .get_slots_with_initialized_token()
        .map_err(hsm_err("C_GetSlotList"))?
    {
        let info = ctx
            .get_token_info(slot)
            .map_err(hsm_err("C_GetTokenInfo"))?;
        if info.label().trim_end() == label {
            return Ok(slot);
        }
    }
    Err(Error::SoftHsm {
        context: format!("token {label:?}"),
        message: "initialised token not found".into(),
    })
}

fn integer_der(unsigned_be: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = {
        let skip = unsigned_be
            .iter()
            .take_while(|b| **b == 0)
            .count()
            .min(unsigned_be.len().saturating_sub(1));
        unsigned_be[skip..].to_vec()
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(&trimmed);
    der::tlv(der::TAG_INTEGER, &content)
}

/// Puts a private key, its public key and its certificate on the token under `id`/`label`.
fn import(
    session: &Session,
    card: &str,
    id: u8,
    label: &str,
    key: &KeyMaterial,
    cert_der: &[u8],
) -> Result<(), Error> {
    let ctx = format!("card {card:?} object {label:?}");
    let ossl = |e: openssl::error::ErrorStack| Error::SoftHsm {
        context: ctx.clone(),
        message: e.to_string(),
    };
    let rsa = PKey::private_key_from_pkcs8(&key.pkcs8_der)
        .and_then(|k| k.rsa())
        .map_err(ossl)?;
    let cert = X509::from_der(cert_der).map_err(ossl)?;
    let subject = cert.subject_name().to_der().map_err(ossl)?;
    let issuer = cert.issuer_name().to_der().map_err(ossl)?;
    let serial = cert.serial_number().to_bn().map_err(ossl)?.to_vec();
    let part = |name: &str, v: Option<&openssl::bn::BigNumRef>| {
        v.map(|b| b.to_vec()).ok_or_else(|| Error::SoftHsm {
            context: ctx.clone(),
            message: format!("RSA key lacks {name}"),
        })
    };
    let n = rsa.n().to_vec();
    let e = rsa.e().to_vec();
    let d = rsa.d().to_vec();
    let p = part("p", rsa.p())?;
    let q = part("q", rsa.q())?;
    let dp = part("dmp1", rsa.dmp1())?;
    let dq = part("dmq1", rsa.dmq1())?;
    let qinv = part("iqmp", rsa.iqmp())?;
    let id = vec![id];
    let label = label.as_bytes().to_vec();

    session
        .create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Id(id.clone()),
            Attribute::Label(label.clone()),
            Attribute::Subject(subject.clone()),
            Attribute::Modulus(n.clone()),
            Attribute::PublicExponent(e.clone()),
            Attribute::PrivateExponent(d),
            Attribute::Prime1(p),
            Attribute::Prime2(q),
            Attribute::Exponent1(dp),
            Attribute::Exponent2(dq),
            Attribute::Coefficient(qinv),
        ])
        .map_err(hsm_err(format!("{ctx}: C_CreateObject private key")))?;
    session
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Id(id.clone()),
            Attribute::Label(label.clone()),
            Attribute::Subject(subject.clone()),
            Attribute::Modulus(n),
            Attribute::PublicExponent(e),
        ])
        .map_err(hsm_err(format!("{ctx}: C_CreateObject public key")))?;
    session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(id),
            Attribute::Label(label),
            Attribute::Subject(subject),
            Attribute::Issuer(issuer),
            Attribute::SerialNumber(integer_der(&serial)),
            Attribute::Value(cert_der.to_vec()),
        ])
        .map_err(hsm_err(format!("{ctx}: C_CreateObject certificate")))?;
    Ok(())
}

/// Creates one token per card (label = card name, user PIN = card PIN, SO PIN
/// [`SOFTHSM_SO_PIN`]) holding `auth` (CKA_ID 01) and, for good cards, `sign` (CKA_ID 02).
pub(crate) fn create_tokens(hsm: &SoftHsm, cards: &[CardOut]) -> Result<SoftHsmFiles, Error> {
    let ctx =
        Pkcs11::new(&hsm.module).map_err(hsm_err(format!("loading {}", hsm.module.display())))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(hsm_err("C_Initialize"))?;
    let result = create_all(&ctx, cards);
    let finalized = ctx.finalize().map_err(hsm_err("C_Finalize"));
    result?;
    finalized?;
    let module: PathBuf = crate::absolute(&hsm.module)?;
    Ok(SoftHsmFiles {
        conf: CONF_REL.into(),
        tokens_dir: TOKENS_REL.into(),
        module: module.display().to_string(),
        so_pin: SOFTHSM_SO_PIN.into(),
    })
}

fn create_all(ctx: &Pkcs11, cards: &[CardOut]) -> Result<(), Error> {
    let so_pin = AuthPin::from(SOFTHSM_SO_PIN.to_owned());
    for card in cards {
        let name = card.name.as_str();
        let c = |step: &str| format!("card {name:?}: {step}");
        let user_pin = AuthPin::from(card.pin.clone());
        let slot = free_slot(ctx)?;
        ctx.init_token(slot, &so_pin, name)
            .map_err(hsm_err(c("C_InitToken")))?;
        let slot = slot_by_label(ctx, name)?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(hsm_err(c("C_OpenSession")))?;
        session
            .login(UserType::So, Some(&so_pin))
            .map_err(hsm_err(c("C_Login SO")))?;
        session
            .init_pin(&user_pin)
            .map_err(hsm_err(c("C_InitPIN")))?;
        session.logout().map_err(hsm_err(c("C_Logout SO")))?;
        session
            .login(UserType::User, Some(&user_pin))
            .map_err(hsm_err(c("C_Login user")))?;
        import(&session, name, 1, "auth", &card.auth_key, &card.auth_der)?;
        if let Some((key, der)) = &card.sign {
            import(&session, name, 2, "sign", key, der)?;
        }
        session.logout().map_err(hsm_err(c("C_Logout user")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::integer_der;

    #[test]
    fn integer_der_pads_and_trims() {
        assert_eq!(integer_der(&[0x7F]), [0x02, 0x01, 0x7F]);
        assert_eq!(integer_der(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer_der(&[0x00, 0x00, 0x05]), [0x02, 0x01, 0x05]);
        assert_eq!(integer_der(&[]), [0x02, 0x01, 0x00]);
    }
}
