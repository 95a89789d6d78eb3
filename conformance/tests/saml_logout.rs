//! Logout propagation to SAML service providers over the back channel: a doctor logged in
//! to an SP whose metadata has a SOAP SingleLogoutService logs out at the IdP; the SP
//! receives a LogoutRequest signed by the IdP for the NameID and SessionIndex it was given.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{
    Browser, ServerOptions, between, pki, posted_saml_response, saml_certificate_pem, saml_login,
    saml_table, start,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SP: &str = "https://soap-sp.example/saml";

/// A one-shot HTTP server on loopback that hands over the first request body it gets.
async fn soap_endpoint() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    let body = body.to_owned();
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tx.send(body);
                    return;
                }
            }
        }
    });
    (port, rx)
}

fn metadata(soap_port: u16) -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:SOAP" Location="http://127.0.0.1:{soap_port}/slo"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://soap-sp.example/acs" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#
    )
}

#[tokio::test]
async fn logging_out_at_the_idp_sends_a_signed_soap_logout_request() {
    let pki = pki();
    let (port, received) = soap_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sp.xml");
    std::fs::write(&file, metadata(port)).unwrap();
    let server = start(
        pki,
        ServerOptions {
            tables: saml_table(&format!(
                "[[saml.sps]]\nmetadata_file = \"{}\"\npre_approved = true\nclaims = [\"hpki_role\"]\n",
                file.display()
            )),
            ..ServerOptions::default()
        },
    );

    // SP-initiated login with the card, up to the auto-POST page.
    let mut browser = Browser::new(pki);
    let (status, page) = saml_login(&server, pki, &mut browser, SP, "doctor").await;
    assert_eq!(status, 200, "{page}");
    let response = posted_saml_response(&page);
    let name_id = between(&response, "<saml:NameID ", "</saml:NameID>")
        .split_once('>')
        .unwrap()
        .1
        .to_owned();
    let session_index = between(&response, "SessionIndex=\"", "\"").to_owned();

    // The doctor logs out at the IdP.
    let logout = browser
        .post_form(&server.public("/logout"), &server.public(""), "")
        .await;
    assert_eq!(logout.status(), 303);

    let body = tokio::time::timeout(std::time::Duration::from_secs(10), received)
        .await
        .expect("the SP's SOAP endpoint is called")
        .unwrap();
    assert!(body.contains("soap:Envelope"), "{body}");
    let request = between(&body, "<soap:Body>", "</soap:Body>");
    let idp_cert = idp_saml::sp::pem_certificate(&saml_certificate_pem()).unwrap();
    let (_, signed) = idp_saml::crypto::verify_enveloped(request, &[idp_cert])
        .expect("signed by the IdP's metadata key");
    let parsed = idp_saml::logout::parse_request(&signed).unwrap();
    assert_eq!(parsed.name_id, name_id);
    assert_eq!(parsed.session_indexes, [session_index]);
    assert_eq!(parsed.issuer, server.public("/saml/metadata"));
    assert_eq!(
        parsed.destination.as_deref(),
        Some(format!("http://127.0.0.1:{port}/slo").as_str())
    );
}
