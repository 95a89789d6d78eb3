//! The doctor portal (`hpki-portal`) against the live IdP, driven over real TLS with the
//! test cards: login through the IdP, the profile, disclosure settings whose effect shows
//! in another relying party's next login, consents withdrawn, the disclosure history,
//! back-channel logout, and the refusals (role guard, CSRF, open redirect, forged or
//! missing login cookies).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod portal_support;

use std::time::Duration;

use harness::{
    Browser, Pki, Server, browse_to, client, cookie, kit_login, location, oidc_kit, reason,
};
use hpki_rp_kit::idp_vocabulary::scope;
use portal_support::{HAREYAKA_REDIRECT, HAREYAKA_SECRET, Portal, setup};

fn portal_browser(pki: &Pki) -> Browser {
    let mut browser = Browser::new(pki);
    browser.also_keep = vec!["__Host-portal-login".into(), "__Host-portal-session".into()];
    browser
}

/// Logs `card` into the portal through the IdP, starting at `start_path`; the portal's
/// final answer (its status and body) after the callback, and where it redirected.
async fn portal_login(
    server: &Server,
    portal: &Portal,
    pki: &Pki,
    browser: &mut Browser,
    card: &str,
    start_path: &str,
) -> (u16, String, String) {
    let callback = portal.url("/auth/callback");
    let query = browse_to(
        server,
        pki,
        browser,
        &portal.url(start_path),
        card,
        true,
        &callback,
    )
    .await
    .unwrap_or_else(|(status, body)| panic!("stopped at {status}: {body}\n{}", server.log()));
    let response = browser.get(&format!("{callback}?{query}")).await;
    let status = response.status().as_u16();
    if status != 303 {
        return (status, String::new(), response.text().await.unwrap());
    }
    let to = location(&response);
    let page = browser.get(&portal.url(&to)).await;
    (page.status().as_u16(), to, page.text().await.unwrap())
}

/// The value of `name="csrf"` on a page.
fn csrf(page: &str) -> String {
    harness::between(page, "name=\"csrf\" value=\"", "\"").to_owned()
}

async fn get(browser: &mut Browser, url: &str) -> (u16, String) {
    let r = browser.get(url).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn regional_login_claims(
    server: &Server,
    pki: &Pki,
) -> serde_json::Map<String, serde_json::Value> {
    let kit = oidc_kit(server, pki, "hareyaka", HAREYAKA_SECRET, HAREYAKA_REDIRECT).await;
    let login = kit_login(
        server,
        pki,
        &kit,
        &[scope::PROFILE, scope::EMAIL, scope::HPKI],
        HAREYAKA_REDIRECT,
    )
    .await
    .unwrap_or_else(|e| panic!("regional login: {e}\n{}", server.log()));
    login.id_token_claims
}

#[tokio::test]
async fn a_doctor_manages_disclosure_through_the_portal() {
    let (server, portal, pki) = setup(HAREYAKA_REDIRECT).await;
    let mut browser = portal_browser(pki);

    // Login through the IdP with the card; the profile shows what the IdP released.
    let (status, to, profile) = portal_login(
        &server,
        &portal,
        pki,
        &mut browser,
        "doctor",
        "/auth/login?return_to=%2Fprofile",
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (200, "/profile"),
        "{profile}\n{}",
        portal.log()
    );
    assert!(profile.contains("<html lang=\"ja\""));
    for expected in [
        "医師（Medical Doctor）",
        "医師資格証とPIN",
        "data-field=\"not_after\"",
    ] {
        assert!(profile.contains(expected), "{expected} missing: {profile}");
    }
    let not_after = harness::between(
        &profile,
        "data-field=\"not_after\"><th scope=\"row\">証明書の有効期間（終了）</th><td>",
        "<",
    );
    assert!(
        not_after.ends_with('日') && not_after.contains('年'),
        "{not_after}"
    );
    let (_, english) = get(&mut browser, &portal.url("/profile?lang=en")).await;
    assert!(english.contains("<html lang=\"en\"") && english.contains("Medical Doctor"));
    get(&mut browser, &portal.url("/profile?lang=ja")).await;

    // Before any change, the regional network receives the email address.
    let claims = regional_login_claims(&server, pki).await;
    assert!(claims.contains_key("email"), "{claims:?}");

    // 情報開示設定: untick email for regional networks (every other box as shown).
    let (status, settings) = get(&mut browser, &portal.url("/settings")).await;
    assert_eq!(status, 200, "{settings}");
    let token = csrf(&settings);
    let mut form = vec![format!("csrf={token}")];
    for chunk in settings.split("<input type=\"checkbox\"").skip(1) {
        let value = harness::between(chunk, "value=\"", "\"");
        let checked = chunk[..chunk.find('>').unwrap()].contains("checked");
        if checked && value != "email:regional_network" {
            form.push(format!("allow={}", value.replace(':', "%3A")));
        }
    }
    assert!(settings.contains("value=\"email:regional_network\" checked"));
    // A form without this session's token changes nothing.
    let forged = form[1..].join("&") + "&csrf=forged";
    let refused = browser
        .post_form(&portal.url("/settings"), &portal.url(""), &forged)
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        reason(&refused.text().await.unwrap()).as_deref(),
        Some("csrf")
    );
    let (_, unchanged) = get(&mut browser, &portal.url("/settings")).await;
    assert!(unchanged.contains("value=\"email:regional_network\" checked"));

    let saved = browser
        .post_form(&portal.url("/settings"), &portal.url(""), &form.join("&"))
        .await;
    assert_eq!(saved.status(), 303);
    assert_eq!(location(&saved), "/settings?done=saved");
    let (_, after) = get(&mut browser, &portal.url("/settings?done=saved")).await;
    assert!(after.contains("role=\"status\""), "{after}");
    assert!(!after.contains("value=\"email:regional_network\" checked"));
    assert!(after.contains("value=\"email:jma_service\" checked"));

    // The regional network's next login releases less.
    let claims = regional_login_claims(&server, pki).await;
    assert!(!claims.contains_key("email"), "{claims:?}");
    assert!(claims.contains_key("hpki_role"));

    // Consents: the regional network is listed with what it receives; withdraw it.
    let (_, consents) = get(&mut browser, &portal.url("/consents")).await;
    assert!(
        consents.contains("data-relying-party=\"hareyaka\""),
        "{consents}"
    );
    assert!(consents.contains("晴れやかネット"));
    let withdrawn = browser
        .post_form(
            &portal.url("/consents/withdraw"),
            &portal.url(""),
            &format!("csrf={}&relying_party=hareyaka", csrf(&consents)),
        )
        .await;
    assert_eq!(location(&withdrawn), "/consents?done=withdrawn");
    let (_, consents) = get(&mut browser, &portal.url("/consents?done=withdrawn")).await;
    assert!(
        !consents.contains("data-relying-party=\"hareyaka\""),
        "{consents}"
    );
    assert!(consents.contains("role=\"status\""));

    // The disclosure history: releases to the regional network, newest first, by name.
    let (_, history) = get(&mut browser, &portal.url("/history")).await;
    assert!(
        history.contains("data-kind=\"release\" data-relying-party=\"hareyaka\""),
        "{history}"
    );
    assert!(
        history.contains("data-kind=\"consent.revoked\""),
        "{history}"
    );
    assert!(
        history.contains("data-kind=\"settings.changed\""),
        "{history}"
    );
    assert!(
        history.contains("メールアドレス（地域医療連携ネットワーク）: 提供しない"),
        "the change in words: {history}"
    );
    assert!(
        history.contains("晴れやかネット"),
        "services by name: {history}"
    );
    let first_release = history
        .find("data-kind=\"release\" data-relying-party=\"hareyaka\"")
        .unwrap();
    let revoked = history.find("data-kind=\"consent.revoked\"").unwrap();
    assert!(revoked < first_release, "newest first");

    // Logout: the portal's session ends, the IdP ends its own, and the portal is back at
    // its welcome page.
    let (_, profile) = get(&mut browser, &portal.url("/profile")).await;
    let out = browser
        .post_form(
            &portal.url("/auth/logout"),
            &portal.url(""),
            &format!("csrf={}", csrf(&profile)),
        )
        .await;
    assert_eq!(out.status(), 303);
    let to_idp = location(&out);
    assert!(
        to_idp.starts_with(&server.public("/end_session?")),
        "{to_idp}"
    );
    let r = browser.get(&portal.url("/profile")).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/auth/login?return_to=%2Fprofile"));
}

#[tokio::test]
async fn the_idp_ending_its_session_ends_the_portal_session() {
    let (server, portal, pki) = setup(HAREYAKA_REDIRECT).await;
    let mut browser = portal_browser(pki);
    let (status, _, _) = portal_login(
        &server,
        &portal,
        pki,
        &mut browser,
        "doctor",
        "/auth/login?return_to=%2Fprofile",
    )
    .await;
    assert_eq!(status, 200);
    // The doctor logs out at the IdP (its own page's button): the IdP posts a logout
    // token to the portal's back-channel endpoint.
    let r = browser
        .post_form(&server.public("/logout"), &server.public(""), "")
        .await;
    assert!(
        r.status().is_redirection() || r.status() == 200,
        "{}",
        r.status()
    );
    let mut ended = false;
    for _ in 0..50 {
        let r = browser.get(&portal.url("/profile")).await;
        if r.status() == 303 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ended,
        "the portal session survived\n{}\n{}",
        portal.log(),
        server.log()
    );
    assert!(
        portal.log().contains("back-channel logout"),
        "{}",
        portal.log()
    );
}

#[tokio::test]
async fn the_portal_refuses_what_it_must() {
    let (server, portal, pki) = setup(HAREYAKA_REDIRECT).await;

    // Not signed in: pages send the browser to log in, keeping where it was going.
    let mut browser = portal_browser(pki);
    let r = browser.get(&portal.url("/history")).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/auth/login?return_to=%2Fhistory");
    let r = browser
        .post_form(
            &portal.url("/settings"),
            &portal.url(""),
            "csrf=x&allow=email%3Ajma_service",
        )
        .await;
    assert_eq!(r.status(), 303, "a change without a session is not made");

    // A callback without the sealed login cookie, or with a forged one.
    let r = browser
        .get(&portal.url("/auth/callback?code=x&state=y"))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        reason(&r.text().await.unwrap()).as_deref(),
        Some("login_expired")
    );
    let start = browser.get(&portal.url("/auth/login")).await;
    let sealed = cookie(&start, "__Host-portal-login").expect("login cookie");
    let mut forged = sealed.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let r = client(pki, None)
        .get(portal.url("/auth/callback?code=x&state=y"))
        .header(reqwest::header::COOKIE, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        reason(&r.text().await.unwrap()).as_deref(),
        Some("login_expired")
    );

    // An open redirect through return_to lands on the portal's own page instead.
    let mut browser = portal_browser(pki);
    let (status, to, _) = portal_login(
        &server,
        &portal,
        pki,
        &mut browser,
        "doctor",
        "/auth/login?return_to=https%3A%2F%2Fevil.example%2F",
    )
    .await;
    assert_eq!((status, to.as_str()), (200, "/"));
    let mut browser = portal_browser(pki);
    let (_, to, _) = portal_login(
        &server,
        &portal,
        pki,
        &mut browser,
        "doctor",
        "/auth/login?return_to=%2F%2Fevil.example%2F",
    )
    .await;
    assert_eq!(to, "/");

    // The role guard: a pharmacist's card logs in at the IdP, but the portal's pages are
    // for doctors.
    let mut browser = portal_browser(pki);
    let (status, _, page) = portal_login(
        &server,
        &portal,
        pki,
        &mut browser,
        "pharmacist",
        "/auth/login?return_to=%2Fprofile",
    )
    .await;
    assert_eq!(status, 403, "{page}");
    assert_eq!(reason(&page).as_deref(), Some("role_not_permitted"));
    assert!(page.contains("医師"));

    // The same session's cookie replayed after logout is refused.
    let mut browser = portal_browser(pki);
    portal_login(
        &server,
        &portal,
        pki,
        &mut browser,
        "doctor",
        "/auth/login?return_to=%2Fprofile",
    )
    .await;
    let session = browser
        .cookies
        .iter()
        .find(|c| c.starts_with("__Host-portal-session="))
        .unwrap()
        .clone();
    let (_, profile) = get(&mut browser, &portal.url("/profile")).await;
    browser
        .post_form(
            &portal.url("/auth/logout"),
            &portal.url(""),
            &format!("csrf={}", csrf(&profile)),
        )
        .await;
    let r = client(pki, None)
        .get(portal.url("/profile"))
        .header(reqwest::header::COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a session ended at logout stays ended");
}
