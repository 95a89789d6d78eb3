//! SoftHSM2 tokens made by `generate`.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` at `C_Initialize`, and setting an environment variable is
//! `unsafe` (forbidden here). So the test re-runs its own test binary, filtered to this one
//! test, with `SOFTHSM2_CONF` (and the output directory) set through `Command::env`. The
//! child does the work; the parent only checks that it succeeded. Skipped (passes) when no
//! SoftHSM2 module is installed.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use idp_devpki::{Manifest, Options, SoftHsm, default_softhsm_module, generate, softhsm_env};
use std::path::{Path, PathBuf};
use std::process::Command;

const CHILD_DIR: &str = "IDP_DEVPKI_SOFTHSM_TEST_DIR";

#[test]
fn softhsm_tokens() {
    let Some(module) = default_softhsm_module() else {
        eprintln!("SoftHSM2 not installed: skipping");
        return;
    };
    match std::env::var_os(CHILD_DIR) {
        Some(dir) => child(Path::new(&dir), module),
        None => {
            let dir = tempfile::tempdir().expect("tempdir");
            let (key, value) = softhsm_env(dir.path()).expect("conf path");
            let exe = std::env::current_exe().expect("test binary path");
            let output = Command::new(exe)
                .args([
                    "--exact",
                    "softhsm_tokens",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(key, &value)
                .env(CHILD_DIR, dir.path())
                .output()
                .expect("run child test");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success(),
                "child failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
            // Make sure the child really ran the test (and did not filter it away).
            assert!(stdout.contains("1 passed"), "child output:\n{stdout}");
            assert!(
                stderr.contains("softhsm child: ok"),
                "child stderr:\n{stderr}"
            );
        }
    }
}

fn slot_for(ctx: &Pkcs11, label: &str) -> cryptoki::slot::Slot {
    ctx.get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label().trim_end() == label)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("token {label} exists"))
}

fn find(session: &Session, class: ObjectClass, id: u8) -> Vec<cryptoki::object::ObjectHandle> {
    session
        .find_objects(&[Attribute::Class(class), Attribute::Id(vec![id])])
        .expect("find objects")
}

fn child(dir: &Path, module: PathBuf) {
    let mut opts = Options::new(
        "softhsm-test",
        time::macros::datetime!(2025-04-01 09:00:00 UTC),
        dir,
    );
    opts.softhsm = Some(SoftHsm {
        module: module.clone(),
    });
    let manifest = generate(&opts).expect("generate with SoftHSM");
    assert_eq!(manifest, Manifest::load(dir).expect("manifest.json"));
    let files = manifest.softhsm.as_ref().expect("softhsm section");
    assert_eq!(files.conf, "softhsm/softhsm2.conf");
    assert!(
        manifest
            .cards
            .iter()
            .all(|c| c.token_label.as_deref() == Some(c.name.as_str()))
    );

    let ctx = Pkcs11::new(&module).expect("load module");
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let initialized = ctx.get_slots_with_initialized_token().expect("slots");
    assert_eq!(
        initialized.len(),
        manifest.cards.len(),
        "one token per card"
    );

    let doctor = manifest.card("doctor").expect("doctor card");
    let session = ctx
        .open_ro_session(slot_for(&ctx, "doctor"))
        .expect("open session");

    // Private objects are invisible before login.
    assert!(find(&session, ObjectClass::PRIVATE_KEY, 1).is_empty());
    assert_eq!(find(&session, ObjectClass::CERTIFICATE, 1).len(), 1);

    // Wrong PIN.
    match session.login(UserType::User, Some(&AuthPin::from("000000".to_owned()))) {
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {}
        other => panic!("wrong PIN gave {other:?}"),
    }
    session
        .login(UserType::User, Some(&AuthPin::from(doctor.pin.clone())))
        .expect("login with the card PIN");

    let keys = find(&session, ObjectClass::PRIVATE_KEY, 1);
    assert_eq!(keys.len(), 1);
    let attrs = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Label,
            ],
        )
        .expect("attributes");
    for a in &attrs {
        match a {
            Attribute::Sensitive(v) => assert!(*v),
            Attribute::Extractable(v) => assert!(!*v),
            Attribute::Label(l) => assert_eq!(l, b"auth"),
            _ => {}
        }
    }
    assert_eq!(
        find(&session, ObjectClass::PRIVATE_KEY, 2).len(),
        1,
        "sign key"
    );
    assert_eq!(find(&session, ObjectClass::PUBLIC_KEY, 1).len(), 1);

    // Certificate on the token is auth.pem.
    let auth_pem = std::fs::read(dir.join(&doctor.cert)).expect("auth.pem");
    let cert = openssl::x509::X509::from_pem(&auth_pem).expect("auth cert");
    let cert_obj = find(&session, ObjectClass::CERTIFICATE, 1)[0];
    let value = session
        .get_attributes(cert_obj, &[AttributeType::Value])
        .expect("cert value");
    match value.first() {
        Some(Attribute::Value(v)) => assert_eq!(v, &cert.to_der().expect("der")),
        other => panic!("no certificate value: {other:?}"),
    }

    // Sign with the token and verify against auth.pem.
    let data = b"HPKI login challenge";
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, keys[0], data)
        .expect("sign");
    assert_eq!(sig.len(), 256);
    let pkey = cert.public_key().expect("public key");
    let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &pkey)
        .expect("verifier");
    verifier.update(data).expect("update");
    assert!(verifier.verify(&sig).expect("verify"), "signature verifies");
    session.logout().expect("logout");
    drop(session);

    // A bad card's token has only the auth objects.
    let session = ctx
        .open_ro_session(slot_for(&ctx, "expired"))
        .expect("open session");
    session
        .login(UserType::User, Some(&AuthPin::from("123456".to_owned())))
        .expect("login");
    assert_eq!(find(&session, ObjectClass::PRIVATE_KEY, 1).len(), 1);
    assert!(find(&session, ObjectClass::PRIVATE_KEY, 2).is_empty());
    drop(session);
    ctx.finalize().expect("C_Finalize");
    eprintln!("softhsm child: ok");
}
