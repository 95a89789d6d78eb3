//! End to end: `hpki-rp-kit`'s OpenID Connect relying party against the real `idp` binary.
//! Real tokens from the live IdP are validated by the kit, then tampered with, replayed,
//! presented to the wrong client or at the wrong time: each attack must be refused, and
//! for the reason the attack targets (the error variant is asserted, not just `is_err`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hpki_rp_kit::idp_vocabulary::hpki::HcRole;
use hpki_rp_kit::{
    AuthParams, CallbackParams, ClaimsVerificationError, Clock, CoreErrorResponseType, CsrfToken,
    Doctor, Error, IdTokenHint, OidcClient, PendingLogin, SignatureVerificationError,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use harness::{Browser, Leg, Pki, Server, ServerOptions, browse, pki, start};

const REDIRECT: &str = "https://rp.example/cb";
const SECRET: &str = "kit-oidc-rp-secret-0123456789";
const SCOPES: &[&str] = &["profile", "hpki"];

/// A `[[oidc.clients]]` registration (client_secret_basic with [`SECRET`], pre-approved,
/// allowed offline_access and refresh tokens), with `extra` TOML keys.
fn client_toml(id: &str, extra: &str) -> String {
    format!(
        r#"
[[oidc.clients]]
client_id = "{id}"
name = "kit-oidc {id}"
secret_sha256 = "{digest}"
auth_method = "client_secret_basic"
redirect_uris = ["{REDIRECT}"]
scopes = ["openid", "profile", "hpki", "offline_access"]
refresh_tokens = true
pre_approved = true
{extra}
"#,
        digest = hex::encode(Sha256::digest(SECRET.as_bytes()))
    )
}

fn server_with(pki: &Pki, clients: &str) -> Server {
    start(
        pki,
        ServerOptions {
            oidc_extra: clients.to_owned(),
            ..ServerOptions::default()
        },
    )
}

async fn kit(server: &Server, pki: &Pki, client_id: &str) -> OidcClient {
    harness::oidc_kit(server, pki, client_id, SECRET, REDIRECT).await
}

/// A clock `offset` away from the system's.
struct Shifted(time::Duration);

impl Clock for Shifted {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.0
    }
}

fn shifted(kit: &OidcClient, offset: time::Duration) -> OidcClient {
    kit.clone().with_clock(Arc::new(Shifted(offset)))
}

/// The browser leg of a card login with `card` through `kit`, in `browser` (which keeps
/// the IdP session): the callback's query and the pending login.
async fn callback_of(
    server: &Server,
    pki: &Pki,
    browser: &mut Browser,
    kit: &OidcClient,
    scopes: &[&str],
    card: &str,
) -> (String, PendingLogin) {
    let (url, pending) = kit.begin(scopes, &AuthParams::hpki_card());
    match browse(server, pki, browser, url.as_str(), card, true, REDIRECT).await {
        Leg::Callback(query) => (query, pending),
        Leg::Page(status, reason) => {
            panic!("stopped at {status} {reason:?}\n{}", server.log())
        }
    }
}

/// A whole login of `card` through `kit` in `browser`.
async fn login_in(
    server: &Server,
    pki: &Pki,
    browser: &mut Browser,
    kit: &OidcClient,
    scopes: &[&str],
    card: &str,
) -> hpki_rp_kit::Login {
    let (query, pending) = callback_of(server, pki, browser, kit, scopes, card).await;
    kit.finish(pending, &CallbackParams::from_query(&query).unwrap())
        .await
        .unwrap_or_else(|e| panic!("login failed: {e}\n{}", server.log()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn parts(jwt: &str) -> (String, String, String) {
    let mut it = jwt.split('.');
    let (h, p, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    assert!(it.next().is_none(), "a compact JWS has three parts");
    (h.to_owned(), p.to_owned(), s.to_owned())
}

fn json_part(part: &str) -> serde_json::Value {
    serde_json::from_slice(&unb64(part)).unwrap()
}

/// `jwt` with its payload passed through `edit` and re-encoded; header and signature kept.
fn with_payload(jwt: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let (h, p, s) = parts(jwt);
    let mut payload = json_part(&p);
    edit(&mut payload);
    let edited = b64(payload.to_string().as_bytes());
    assert_ne!(edited, p, "the edit changed the payload");
    format!("{h}.{edited}.{s}")
}

/// `jwt` with its header passed through `edit` and re-encoded; payload and signature kept.
fn with_header(jwt: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let (h, p, s) = parts(jwt);
    let mut header = json_part(&h);
    edit(&mut header);
    format!("{}.{p}.{s}", b64(header.to_string().as_bytes()))
}

/// `part` with its character at `index` replaced by another base64url character.
fn flip_char(part: &str, index: usize) -> String {
    let mut chars: Vec<char> = part.chars().collect();
    chars[index] = if chars[index] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// Decodes base64url, tolerating non-canonical trailing bits; `None` if not base64url.
fn unb64_lenient(text: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(text).ok()
}

/// An index of `payload` (base64url JSON) whose [`flip_char`] leaves a JSON object with the
/// same set of claims, the ones read before the signature is checked (`iss`, `aud`, `exp`,
/// `iat`, `azp`, `nonce`) unchanged and one other value changed.
fn claim_preserving_flip(payload: &str) -> usize {
    let original = json_part(payload);
    let early = ["iss", "aud", "exp", "iat", "azp", "nonce"];
    (0..payload.len())
        .find(|&i| {
            let Some(bytes) = unb64_lenient(&flip_char(payload, i)) else {
                return false;
            };
            let Ok(serde_json::Value::Object(edited)) = serde_json::from_slice(&bytes) else {
                return false;
            };
            serde_json::Value::Object(edited.clone()) != original
                && edited.len() == original.as_object().unwrap().len()
                && early.iter().all(|k| edited.get(*k) == original.get(*k))
        })
        .expect("some flip keeps the claims readable")
}

fn hint(jwt: String) -> IdTokenHint {
    serde_json::from_value(serde_json::Value::String(jwt)).unwrap()
}

fn signature_error(
    result: Result<hpki_rp_kit::VerifiedIdToken, Error>,
) -> SignatureVerificationError {
    match result {
        Err(Error::IdToken(ClaimsVerificationError::SignatureVerification(e))) => e,
        other => panic!("expected a signature refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_good_login_revalidates_and_reads_as_a_card_login_of_a_medical_doctor() {
    let pki = pki();
    let server = server_with(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let login = harness::kit_login(&server, pki, &kit, SCOPES, REDIRECT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(login.is_hpki_card_login());
    assert!(login.sid.is_some(), "the ID token names the IdP session");
    let again = kit
        .validate_id_token(&login.id_token)
        .await
        .expect("the IdP's own ID token validates");
    assert_eq!(again.subject, login.subject);
    assert_eq!(again.acr, login.acr);
    assert_eq!(again.claims, login.id_token_claims);
    let doctor = Doctor::from_login(&login);
    assert_eq!(doctor.hpki_role, Some(HcRole::MedicalDoctor));
    assert!(doctor.is_medical_doctor());
    assert!(doctor.is_hpki_card_login());
    assert_eq!(doctor.subject, login.subject);
    assert!(doctor.family_name.kanji.is_some(), "{doctor:?}");
    // The same doctor from the re-validated token.
    let from_token = Doctor::from_id_token(&again);
    assert_eq!(from_token.hpki_role, Some(HcRole::MedicalDoctor));
    assert_eq!(from_token.family_name.kanji, doctor.family_name.kanji);
}

#[tokio::test]
async fn tampered_id_tokens_are_refused_for_the_right_reason() {
    let pki = pki();
    let server = server_with(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let login = harness::kit_login(&server, pki, &kit, SCOPES, REDIRECT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let jwt = login.id_token.secret().to_owned();
    // The control: untouched, it validates.
    kit.validate_id_token(&login.id_token).await.unwrap();

    // A claim changed (still valid JSON, same iss/aud/exp): the signature no longer holds.
    let promoted = with_payload(&jwt, |p| p["hpki_role"] = "Director of Hospital".into());
    let e = signature_error(kit.validate_id_token(&hint(promoted)).await);
    assert!(
        matches!(e, SignatureVerificationError::CryptoError(_)),
        "{e:?}"
    );
    let other_subject = with_payload(&jwt, |p| p["sub"] = "someone-else".into());
    let e = signature_error(kit.validate_id_token(&hint(other_subject)).await);
    assert!(
        matches!(e, SignatureVerificationError::CryptoError(_)),
        "{e:?}"
    );
    // A character of the payload flipped in place, where the payload still reads as the
    // same claims set but for one value: the signature is what refuses it.
    let (h, p, s) = parts(&jwt);
    let flipped = format!("{h}.{}.{s}", flip_char(&p, claim_preserving_flip(&p)));
    let e = signature_error(kit.validate_id_token(&hint(flipped)).await);
    assert!(
        matches!(e, SignatureVerificationError::CryptoError(_)),
        "{e:?}"
    );
    // A flip that breaks the payload's JSON: not even read as a JWT.
    let broken = (0..p.len())
        .find(|&i| {
            unb64_lenient(&flip_char(&p, i))
                .is_some_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_err())
        })
        .unwrap();
    let flipped = format!("{h}.{}.{s}", flip_char(&p, broken));
    assert!(matches!(
        kit.validate_id_token(&hint(flipped)).await,
        Err(Error::IdToken(ClaimsVerificationError::Unsupported(_)))
    ));
    // A character of the signature flipped.
    let flipped = format!("{h}.{p}.{}", flip_char(&s, s.len() / 2));
    let e = signature_error(kit.validate_id_token(&hint(flipped)).await);
    assert!(
        matches!(e, SignatureVerificationError::CryptoError(_)),
        "{e:?}"
    );
    // The signature removed and alg "none".
    let unsigned = {
        let header = json_part(&h);
        let mut none = header.clone();
        none["alg"] = "none".into();
        format!("{}.{p}.", b64(none.to_string().as_bytes()))
    };
    let e = signature_error(kit.validate_id_token(&hint(unsigned)).await);
    assert_eq!(e, SignatureVerificationError::NoSignature);
    // alg "none" with the original signature left on.
    let none_signed = with_header(&jwt, |h| h["alg"] = "none".into());
    let e = signature_error(kit.validate_id_token(&hint(none_signed)).await);
    assert_eq!(e, SignatureVerificationError::NoSignature);
    // HS256 keyed with the client secret (what a naive verifier would accept), kid kept.
    let header = json_part(&h);
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = header["kid"].as_str().map(str::to_owned);
    hs.typ = Some("JWT".into());
    let forged = jsonwebtoken::encode(
        &hs,
        &json_part(&p),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let e = signature_error(kit.validate_id_token(&hint(forged)).await);
    assert!(
        matches!(e, SignatureVerificationError::DisallowedAlg(_)),
        "{e:?}"
    );
    // The original signature under a header that only changes alg to HS256.
    let hs_header = with_header(&jwt, |h| h["alg"] = "HS256".into());
    let e = signature_error(kit.validate_id_token(&hint(hs_header)).await);
    assert!(
        matches!(e, SignatureVerificationError::DisallowedAlg(_)),
        "{e:?}"
    );
    // Another allowed asymmetric algorithm named over the real kid and signature: the
    // published key is for the token's own algorithm only (its JWK names it), so no key
    // fits (after the one JWKS refetch): UnknownSigningKey.
    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        if header["alg"] == alg {
            continue;
        }
        let swapped = with_header(&jwt, |h| h["alg"] = alg.into());
        assert!(
            matches!(
                kit.validate_id_token(&hint(swapped)).await,
                Err(Error::UnknownSigningKey)
            ),
            "alg {alg} over the real kid"
        );
    }
    // A kid the provider does not publish: one JWKS refetch, then UnknownSigningKey; and
    // again (the refetch is rate-limited, still refused).
    for _ in 0..2 {
        let unknown_kid = with_header(&jwt, |h| h["kid"] = "not-a-published-key".into());
        assert!(
            matches!(
                kit.validate_id_token(&hint(unknown_kid)).await,
                Err(Error::UnknownSigningKey)
            ),
            "unknown kid"
        );
    }
    // Not a JWT at all.
    assert!(matches!(
        kit.validate_id_token(&hint("not.a-jwt".into())).await,
        Err(Error::IdToken(ClaimsVerificationError::Unsupported(_)))
    ));
    // The untouched token still validates afterwards (nothing was poisoned).
    kit.validate_id_token(&login.id_token).await.unwrap();
}

#[tokio::test]
async fn an_id_token_of_another_client_is_refused_for_its_audience() {
    let pki = pki();
    let server = server_with(
        pki,
        &format!("{}{}", client_toml("rp-a", ""), client_toml("rp-b", "")),
    );
    let kit_a = kit(&server, pki, "rp-a").await;
    let kit_b = kit(&server, pki, "rp-b").await;
    let login_a = harness::kit_login(&server, pki, &kit_a, SCOPES, REDIRECT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    kit_a.validate_id_token(&login_a.id_token).await.unwrap();
    match kit_b.validate_id_token(&login_a.id_token).await {
        Err(Error::IdToken(ClaimsVerificationError::InvalidAudience(message))) => {
            assert!(message.contains("rp-b"), "{message}");
        }
        other => panic!("A's ID token at B: {other:?}"),
    }
    // And the other way round: B's own token is fine at B, refused at A.
    let login_b = harness::kit_login(&server, pki, &kit_b, SCOPES, REDIRECT)
        .await
        .unwrap();
    kit_b.validate_id_token(&login_b.id_token).await.unwrap();
    assert!(matches!(
        kit_a.validate_id_token(&login_b.id_token).await,
        Err(Error::IdToken(ClaimsVerificationError::InvalidAudience(_)))
    ));
}

#[tokio::test]
async fn an_id_token_is_refused_once_its_time_has_passed_or_before_it_was_issued() {
    let pki = pki();
    let server = server_with(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let login = harness::kit_login(&server, pki, &kit, SCOPES, REDIRECT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    // A clock one minute ahead is still within the token's life (the control).
    shifted(&kit, time::Duration::minutes(1))
        .validate_id_token(&login.id_token)
        .await
        .unwrap();
    // One hour ahead: expired.
    match shifted(&kit, time::Duration::hours(1))
        .validate_id_token(&login.id_token)
        .await
    {
        Err(Error::IdToken(ClaimsVerificationError::Expired(_))) => {}
        other => panic!("an hour later: {other:?}"),
    }
    // One hour behind: issued in the future (openidconnect reports it as Expired too).
    match shifted(&kit, -time::Duration::hours(1))
        .validate_id_token(&login.id_token)
        .await
    {
        Err(Error::IdToken(ClaimsVerificationError::Expired(message))) => {
            assert!(message.contains("future"), "{message}");
        }
        other => panic!("an hour earlier: {other:?}"),
    }
    // The shifted clients did not change the original's clock.
    kit.validate_id_token(&login.id_token).await.unwrap();
}

#[tokio::test]
async fn a_replayed_or_mixed_up_authorization_response_is_refused() {
    let pki = pki();
    let server = server_with(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let mut browser = Browser::new(pki);
    let scopes = &["profile", "hpki", "offline_access"];
    let (query, pending) = callback_of(&server, pki, &mut browser, &kit, scopes, "doctor").await;
    // The pending login as the RP would keep it in its cookie, read back several times.
    let kept = serde_json::to_string(&pending).unwrap();
    let copy = || serde_json::from_str::<PendingLogin>(&kept).unwrap();
    let callback = CallbackParams::from_query(&query).unwrap();
    assert_eq!(callback.iss.as_deref(), Some(server.public("").as_str()));

    // All refusals before the code is used: the code is still good, so only the check
    // under test can stop these.
    let mut other_state = callback.clone();
    other_state.state = Some(CsrfToken::new("another-login's-state".into()));
    assert!(matches!(
        kit.finish(copy(), &other_state).await,
        Err(Error::StateMismatch)
    ));
    let mut no_state = callback.clone();
    no_state.state = None;
    assert!(matches!(
        kit.finish(copy(), &no_state).await,
        Err(Error::StateMismatch)
    ));
    let mut mixed_up = callback.clone();
    mixed_up.iss = Some("https://evil.example".into());
    assert!(matches!(
        kit.finish(copy(), &mixed_up).await,
        Err(Error::IssuerMismatch)
    ));
    // The issuer with a trailing slash is another string: refused too (RFC 9207 §2.4:
    // simple string comparison).
    let mut slashed = callback.clone();
    slashed.iss = Some(format!("{}/", server.public("")));
    assert!(matches!(
        kit.finish(copy(), &slashed).await,
        Err(Error::IssuerMismatch)
    ));
    // The IdP announces the iss parameter: a callback stripped of it is refused.
    let mut stripped = callback.clone();
    stripped.iss = None;
    assert!(matches!(
        kit.finish(copy(), &stripped).await,
        Err(Error::MissingIssuer)
    ));
    // A parameter given twice (a second state or code appended): malformed.
    for extra in ["state=x", "code=x", "iss=https%3A%2F%2Fevil.example"] {
        assert!(matches!(
            CallbackParams::from_query(&format!("{query}&{extra}")),
            Err(Error::MalformedCallback(_))
        ));
    }
    // Code injection: another browser's code (an attacker's own login) pasted into this
    // login's callback with this login's state. PKCE binds the code to the other
    // login's verifier: the token endpoint refuses it.
    let (attacker_query, _attacker_pending) =
        callback_of(&server, pki, &mut Browser::new(pki), &kit, scopes, "doctor").await;
    let mut injected = callback.clone();
    injected.code = CallbackParams::from_query(&attacker_query).unwrap().code;
    assert_ne!(injected.code, callback.code);
    match kit.finish(copy(), &injected).await {
        Err(Error::TokenEndpoint { error, .. }) => {
            assert_eq!(error, CoreErrorResponseType::InvalidGrant);
        }
        other => panic!("injected code: {other:?}"),
    }
    // A pending login of another begin() (other state, nonce and verifier).
    let (_, foreign) = kit.begin(SCOPES, &AuthParams::hpki_card());
    assert!(matches!(
        kit.finish(foreign, &callback).await,
        Err(Error::StateMismatch)
    ));

    // Now the genuine response: it works once, and its access token works.
    let login = kit
        .finish(copy(), &callback)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(login.is_hpki_card_login());
    kit.userinfo(&login.access_token, &login.subject)
        .await
        .unwrap();
    // The same response again (a replay of the callback URL): the code is spent.
    match kit.finish(copy(), &callback).await {
        Err(Error::TokenEndpoint { error, .. }) => {
            assert_eq!(error, CoreErrorResponseType::InvalidGrant);
        }
        other => panic!("replayed code: {other:?}"),
    }
    // And the replay revoked what the code had issued (RFC 6749 §4.1.2): the access token
    // and the refresh token of the genuine login are dead.
    match kit.userinfo(&login.access_token, &login.subject).await {
        Err(Error::UserInfo(message)) => assert!(message.starts_with("401"), "{message}"),
        other => panic!("access token after the code replay: {other:?}"),
    }
    let refresh = login.refresh_token.clone().expect("offline_access");
    match kit.refresh(&refresh, &login.subject).await {
        Err(Error::TokenEndpoint { error, .. }) => {
            assert_eq!(error, CoreErrorResponseType::InvalidGrant);
        }
        other => panic!("refresh token after the code replay: {other:?}"),
    }
}

#[tokio::test]
async fn back_channel_logout_tokens_are_accepted_once_and_only_where_they_belong() {
    let pki = pki();
    let (port, mut received) = harness::logout_receiver(Vec::new()).await;
    let server = server_with(
        pki,
        &format!(
            "{}{}",
            client_toml(
                "bc-rp",
                &format!(r#"backchannel_logout_uri = "http://127.0.0.1:{port}/backchannel""#)
            ),
            client_toml("other-rp", "")
        ),
    );
    let other = kit(&server, pki, "other-rp").await;
    let kit = kit(&server, pki, "bc-rp").await;
    let mut browser = Browser::new(pki);
    let login = login_in(&server, pki, &mut browser, &kit, SCOPES, "doctor").await;
    let sid = login.sid.clone().expect("the ID token carries sid");

    // RP-initiated logout in the same browser, with the ID token as hint: the IdP ends the
    // session and tells the relying party by back channel.
    let url = kit.end_session_url(&login.id_token, None, None).unwrap();
    let response = browser.get(url.as_str()).await;
    assert_eq!(response.status(), 303, "{}", server.log());
    let token = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap_or_else(|_| panic!("no back-channel logout arrived\n{}", server.log()))
        .expect("a logout token");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));

    // The refusals first (each checked before the jti is remembered): the genuine token
    // must still be accepted after them.
    let (h, p, s) = parts(&token);
    // Tampered: a claim changed, then a character of the payload, then of the signature.
    let other_sid = with_payload(&token, |c| c["sid"] = "another-session".into());
    assert!(matches!(
        kit.verify_logout_token(&other_sid).await,
        Err(Error::LogoutToken("bad signature"))
    ));
    let flipped = format!("{h}.{}.{s}", flip_char(&p, claim_preserving_flip(&p)));
    assert!(matches!(
        kit.verify_logout_token(&flipped).await,
        Err(Error::LogoutToken("bad signature"))
    ));
    let flipped = format!("{h}.{p}.{}", flip_char(&s, s.len() / 2));
    assert!(matches!(
        kit.verify_logout_token(&flipped).await,
        Err(Error::LogoutToken("bad signature"))
    ));
    // alg none / HS256 headers over the real payload ("none" is no JWS algorithm at all
    // for jsonwebtoken: the header does not parse).
    for (alg, reason) in [("none", "malformed"), ("HS256", "algorithm not accepted")] {
        let forged = with_header(&token, |h| h["alg"] = alg.into());
        match kit.verify_logout_token(&forged).await {
            Err(Error::LogoutToken(r)) if r == reason => {}
            other => panic!("alg {alg}: {other:?}"),
        }
    }
    // HS256 keyed with the client secret over the real claims.
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = header.kid.clone();
    hs.typ = Some("logout+jwt".into());
    let forged = jsonwebtoken::encode(
        &hs,
        &json_part(&p),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        kit.verify_logout_token(&forged).await,
        Err(Error::LogoutToken("algorithm not accepted"))
    ));
    // Another allowed asymmetric algorithm over the real kid: the key is not for it.
    for alg in ["RS256", "PS256", "ES256", "EdDSA"] {
        if header.alg == jsonwebtoken::Algorithm::from_str(alg).unwrap() {
            continue;
        }
        let swapped = with_header(&token, |h| h["alg"] = alg.into());
        match kit.verify_logout_token(&swapped).await {
            Err(Error::LogoutToken("the key is for another algorithm")) => {}
            other => panic!("alg {alg} over the real kid: {other:?}"),
        }
    }
    // At another client: not its audience.
    assert!(matches!(
        other.verify_logout_token(&token).await,
        Err(Error::LogoutToken("issued to another client"))
    ));
    // An hour later: expired. An hour earlier: issued in the future.
    assert!(matches!(
        shifted(&kit, time::Duration::hours(1))
            .verify_logout_token(&token)
            .await,
        Err(Error::LogoutToken("expired"))
    ));
    assert!(matches!(
        shifted(&kit, -time::Duration::hours(1))
            .verify_logout_token(&token)
            .await,
        Err(Error::LogoutToken("issued in the future"))
    ));
    // An ID token (same issuer, same audience, same key) is not a logout token.
    assert!(matches!(
        kit.verify_logout_token(login.id_token.secret()).await,
        Err(Error::LogoutToken("typ is not logout+jwt"))
    ));
    // Nor is a logout token an ID token.
    assert!(matches!(
        kit.validate_id_token(&hint(token.clone())).await,
        Err(Error::IdToken(ClaimsVerificationError::Unsupported(_)))
    ));

    // The genuine token, once: it names this login's subject and IdP session.
    let notice = kit
        .verify_logout_token(&token)
        .await
        .unwrap_or_else(|e| panic!("the IdP's logout token: {e}"));
    assert_eq!(notice.subject.as_ref(), Some(&login.subject));
    assert_eq!(notice.sid.as_deref(), Some(sid.as_str()));
    // Twice: a replay. Also through a clone (clones share the replay cache).
    assert!(matches!(
        kit.verify_logout_token(&token).await,
        Err(Error::LogoutTokenReplay)
    ));
    assert!(matches!(
        kit.clone().verify_logout_token(&token).await,
        Err(Error::LogoutTokenReplay)
    ));
    // The IdP session is gone: the next authorization request asks for the card again.
    let (url, _) = kit.begin(SCOPES, &AuthParams::hpki_card());
    let response = browser.get(url.as_str()).await;
    assert_eq!(response.status(), 303);
    let next = harness::location(&response);
    assert!(next.starts_with("/login?"), "{next}");
    // Only the relying party of the session was told.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), received.recv())
            .await
            .is_err(),
        "one logout token for one relying party"
    );
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_refresh_token_is_refused() {
    let pki = pki();
    let server = server_with(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let login = harness::kit_login(
        &server,
        pki,
        &kit,
        &["profile", "hpki", "offline_access"],
        REDIRECT,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let first = login
        .refresh_token
        .clone()
        .expect("offline_access gives a refresh token");
    let refreshed = kit
        .refresh(&first, &login.subject)
        .await
        .unwrap_or_else(|e| panic!("refresh: {e}\n{}", server.log()));
    assert_ne!(
        refreshed.access_token.secret(),
        login.access_token.secret(),
        "a new access token"
    );
    if let Some(id_token) = &refreshed.id_token {
        assert_eq!(id_token.subject, login.subject);
    }
    let second = refreshed
        .refresh_token
        .clone()
        .expect("the refresh token rotates");
    assert_ne!(first.secret(), second.secret());
    // The new access token works.
    let info = kit
        .userinfo(&refreshed.access_token, &login.subject)
        .await
        .unwrap();
    assert_eq!(info.subject, login.subject);
    // The old refresh token again: reuse, refused with invalid_grant.
    match kit.refresh(&first, &login.subject).await {
        Err(Error::TokenEndpoint { error, .. }) => {
            assert_eq!(error, CoreErrorResponseType::InvalidGrant);
        }
        other => panic!("reused refresh token: {other:?}"),
    }
    // Reuse revokes the family: the rotated token is dead too.
    match kit.refresh(&second, &login.subject).await {
        Err(Error::TokenEndpoint { error, .. }) => {
            assert_eq!(error, CoreErrorResponseType::InvalidGrant);
        }
        other => panic!("rotated token after reuse: {other:?}"),
    }
    // A made-up refresh token is invalid_grant as well.
    let made_up = hpki_rp_kit::RefreshToken::new("made-up-refresh-token".into());
    match kit.refresh(&made_up, &login.subject).await {
        Err(Error::TokenEndpoint { error, .. }) => {
            assert_eq!(error, CoreErrorResponseType::InvalidGrant);
        }
        other => panic!("made-up refresh token: {other:?}"),
    }
}

#[tokio::test]
async fn userinfo_answering_for_another_subject_is_refused() {
    let pki = pki();
    let server = server_with(pki, &client_toml("rp", ""));
    let kit = kit(&server, pki, "rp").await;
    let doctor = login_in(&server, pki, &mut Browser::new(pki), &kit, SCOPES, "doctor").await;
    let other = login_in(
        &server,
        pki,
        &mut Browser::new(pki),
        &kit,
        SCOPES,
        "multi-role",
    )
    .await;
    assert_ne!(doctor.subject, other.subject, "two doctors, two subjects");
    // Each access token with its own login's subject works.
    assert_eq!(
        kit.userinfo(&doctor.access_token, &doctor.subject)
            .await
            .unwrap()
            .subject,
        doctor.subject
    );
    assert_eq!(
        kit.userinfo(&other.access_token, &other.subject)
            .await
            .unwrap()
            .subject,
        other.subject
    );
    // Another login's access token with this login's subject: token substitution.
    assert!(matches!(
        kit.userinfo(&other.access_token, &doctor.subject).await,
        Err(Error::SubjectMismatch)
    ));
    assert!(matches!(
        kit.userinfo(&doctor.access_token, &other.subject).await,
        Err(Error::SubjectMismatch)
    ));
}
