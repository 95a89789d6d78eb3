//! Attacks on the live SAML IdP's SSO endpoint (`/saml/sso`, HTTP-POST and HTTP-Redirect,
//! real TLS), each from a vector file in `conformance/vectors/saml/` (described in its
//! README): a template the test fills (fresh IDs and instants, this IdP's URLs), signs as
//! the vector says with the registered SP's key or another registered SP's key, and sends
//! by the vector's binding.
//!
//! Every attack must be refused without side effects: HTTP 400 with the refusal page
//! (`data-reason="saml_request_refused"`) giving the vector's expected reason, no
//! `Set-Cookie`, no `Location`, no `SAMLResponse` anywhere (nothing goes to any ACS), no
//! file content echoed, the canary listener (the URL external entities, stylesheets and
//! references point at) never contacted, the IdP still healthy, and the request's ID not
//! consumed: the genuine signed request with the same ID is accepted right after. Replay
//! vectors send a genuine request first, which must be accepted, and then again.
//!
//! Each attack runs twice: from an anonymous browser (an accepted request would be sent
//! on to the login) and from the browser of a doctor logged in with the card, for an SP
//! that needs no consent (an accepted request would be answered with an assertion at once).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use harness::{Server, ServerOptions, pki, saml_table, start, workspace};
use idp_core::oidc::provider::percent_encode;
use idp_saml::crypto::SigningCredential;
use idp_saml::xml::{instant, new_id};
use time::OffsetDateTime;

/// The SP the attacks target: `AuthnRequestsSigned="true"`, pre-approved (no consent).
const SP_ENTITY_ID: &str = "https://target-sp.example/saml";
const SP_ACS: &str = "https://target-sp.example/acs";
const SP_ORIGIN: &str = "https://target-sp.example";
/// Another registered SP, whose key signs the "wrong key" vectors.
const OTHER_ENTITY_ID: &str = "https://other-sp.example/saml";
const OTHER_ACS: &str = "https://other-sp.example/acs";
const RELAY_STATE: &str = "relay-attack-1";
const REFUSAL_PAGE: &str = r#"data-reason="saml_request_refused""#;
/// The genuine request every attack is derived from (the control).
const GENUINE: &str = "genuine_request";
/// Header keys of a vector file.
const KEYS: [&str; 8] = [
    "attack",
    "binding",
    "first",
    "sign",
    "tamper",
    "issue-instant",
    "sigalg",
    "expect",
];

fn vectors_dir() -> PathBuf {
    workspace().join("conformance/vectors/saml")
}

// ----- vector files -------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binding {
    Post,
    Redirect,
}

impl Binding {
    fn parse(value: &str) -> Self {
        match value {
            "post" => Self::Post,
            "redirect" => Self::Redirect,
            other => panic!("unknown binding {other:?}"),
        }
    }
}

/// Who signs what the test generates (`{{SIGNATURE}}`, an inline empty template, the
/// Redirect query string); signatures a vector copies from the genuine request come
/// from `{{GENUINE…}}` placeholders, whatever this says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signer {
    Nobody,
    TargetSp,
    OtherSp,
}

/// A vector file: `key: value` lines in a leading comment, then the XML template.
#[derive(Debug)]
struct Vector {
    name: String,
    fields: BTreeMap<&'static str, String>,
    template: String,
}

impl Vector {
    fn parse(name: &str, text: &str) -> Self {
        let rest = text
            .trim_start()
            .strip_prefix("<!--")
            .unwrap_or_else(|| panic!("{name}: no header comment"));
        let (header, body) = rest
            .split_once("-->")
            .unwrap_or_else(|| panic!("{name}: unterminated header"));
        let mut fields: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut last = None;
        for line in header.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key = line
                .split_once(':')
                .and_then(|(k, _)| KEYS.iter().find(|known| **known == k));
            match key {
                Some(&key) => {
                    let value = line[key.len() + 1..].trim().to_owned();
                    assert!(
                        fields.insert(key, value).is_none(),
                        "{name}: {key} given twice"
                    );
                    last = Some(key);
                }
                None => {
                    let key = last.unwrap_or_else(|| panic!("{name}: stray line {line:?}"));
                    let value = fields.get_mut(key).expect("continued field");
                    value.push(' ');
                    value.push_str(line);
                }
            }
        }
        for required in ["attack", "binding", "sign", "expect"] {
            assert!(fields.contains_key(required), "{name}: no {required}");
        }
        let vector = Self {
            name: name.to_owned(),
            fields,
            template: body.trim().to_owned(),
        };
        // Fail on a typo now rather than in the middle of a run.
        let _ = (vector.binding(), vector.first(), vector.signer());
        let _ = (vector.issue_offset(), vector.tamper());
        vector
    }

    fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    fn binding(&self) -> Binding {
        Binding::parse(self.field("binding").expect("binding"))
    }

    /// Replay vectors: the binding of the first (accepted) sending.
    fn first(&self) -> Option<Binding> {
        self.field("first").map(Binding::parse)
    }

    fn signer(&self) -> Signer {
        match self.field("sign").expect("sign") {
            "none" => Signer::Nobody,
            "sp" => Signer::TargetSp,
            "other" => Signer::OtherSp,
            other => panic!("{}: unknown signer {other:?}", self.name),
        }
    }

    fn expect(&self) -> &str {
        self.field("expect").expect("expect")
    }

    /// Seconds added to now for `{{ISSUE_INSTANT}}`.
    fn issue_offset(&self) -> i64 {
        self.field("issue-instant")
            .map_or(0, |s| s.parse().expect("issue-instant: seconds"))
    }

    /// `FROM => TO`, applied after signing.
    fn tamper(&self) -> Option<(&str, &str)> {
        self.field("tamper").map(|t| {
            let (from, to) = t.split_once(" => ").expect("tamper: FROM => TO");
            (from, to)
        })
    }
}

fn load_vector(name: &str) -> Vector {
    let path = vectors_dir().join(format!("{name}.xml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Vector::parse(name, &text)
}

/// Every vector file but the control, by name.
fn attack_vectors() -> Vec<Vector> {
    let mut names: Vec<String> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".xml").map(str::to_owned))
        .filter(|n| n != GENUINE)
        .collect();
    names.sort();
    names.iter().map(|n| load_vector(n)).collect()
}

// ----- XML helpers --------------------------------------------------------------------

/// The byte range of the first element whose local name is `local` (prefix ignored).
fn find_element(xml: &str, local: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(offset) = xml[from..].find('<') {
        let start = from + offset;
        let rest = &xml[start + 1..];
        let len = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        let qname = &rest[..len];
        if !qname.is_empty() && qname.rsplit(':').next() == Some(local) {
            let close = format!("</{qname}>");
            let end = start + xml[start..].find(&close)? + close.len();
            return Some((start, end));
        }
        from = start + 1;
    }
    None
}

/// The text content of the first element named `local`.
fn element_text<'a>(xml: &'a str, local: &str) -> Option<&'a str> {
    let (start, end) = find_element(xml, local)?;
    let element = &xml[start..end];
    let open = element.find('>')? + 1;
    let close = element.rfind("</")?;
    Some(element[open..close].trim())
}

fn strip_declaration(xml: &str) -> &str {
    match xml.trim_start().strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(rest, |(_, body)| body).trim(),
        None => xml.trim(),
    }
}

/// The `ID` of the root element (the first element after the prolog).
fn root_id(xml: &str) -> String {
    let mut rest = xml;
    loop {
        let at = rest.find('<').expect("an element");
        rest = &rest[at..];
        if rest.starts_with("<?") || rest.starts_with("<!") {
            rest = &rest[1..];
            continue;
        }
        let tag = &rest[..rest.find('>').expect("a tag end")];
        let bytes = tag.as_bytes();
        let at = tag
            .match_indices("ID=\"")
            .map(|(i, _)| i)
            .find(|&i| i > 0 && bytes[i - 1].is_ascii_whitespace())
            .expect("the root has an ID");
        let value = &tag[at + 4..];
        return value[..value.find('"').unwrap()].to_owned();
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn with_query_param(query: &str, name: &str, value: &str) -> String {
    let prefix = format!("{name}=");
    query
        .split('&')
        .map(|pair| {
            if pair.starts_with(&prefix) {
                format!("{prefix}{value}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The refusal reason the page shows (`<small>…</small>` after the notice).
fn page_reason(body: &str) -> Option<String> {
    let after = &body[body.find(REFUSAL_PAGE)?..];
    let start = after.find("<small>")? + "<small>".len();
    let end = after[start..].find("</small>")? + start;
    Some(unescape(&after[start..end]))
}

// ----- the IdP and its SPs ------------------------------------------------------------

fn credential(name: &str) -> SigningCredential {
    let (key, cert) = SigningCredential::generate_pem(name, 30).unwrap();
    SigningCredential::from_pem(&key, &cert).unwrap()
}

/// SP metadata: signed requests, one signing key, one HTTP-POST ACS.
fn sp_metadata(entity_id: &str, acs: &str, key: &SigningCredential) -> String {
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity_id}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="true">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#,
        key.certificate_base64()
    )
}

struct Idp {
    server: Server,
    _dir: tempfile::TempDir,
    sp: SigningCredential,
    other: SigningCredential,
    /// Where vectors' external entities, stylesheets and references point: must never
    /// be contacted.
    canary: TcpListener,
    http: reqwest::Client,
    /// The logged-in doctor's session cookie, when the attacks run logged in.
    session: Option<String>,
}

async fn start_idp(logged_in: bool) -> Idp {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (sp, other) = (credential("target SP"), credential("other SP"));
    let (sp_file, other_file) = (dir.path().join("sp.xml"), dir.path().join("other.xml"));
    std::fs::write(&sp_file, sp_metadata(SP_ENTITY_ID, SP_ACS, &sp)).unwrap();
    std::fs::write(&other_file, sp_metadata(OTHER_ENTITY_ID, OTHER_ACS, &other)).unwrap();
    let sps = format!(
        r#"
[[saml.sps]]
metadata_file = "{}"
display_name = "Target SP (attacks)"
claims = ["name", "hpki_role"]
pre_approved = true

[[saml.sps]]
metadata_file = "{}"
display_name = "Other SP (attacks)"
claims = ["name"]
"#,
        sp_file.display(),
        other_file.display()
    );
    let server = start(
        pki,
        ServerOptions {
            tables: saml_table(&sps),
            ..Default::default()
        },
    );
    let session = if logged_in {
        Some(
            harness::login(&server, pki, "doctor")
                .await
                .expect("the doctor logs in with the card"),
        )
    } else {
        None
    };
    let canary = TcpListener::bind("127.0.0.1:0").unwrap();
    canary.set_nonblocking(true).unwrap();
    Idp {
        server,
        _dir: dir,
        sp,
        other,
        canary,
        http: harness::client(pki, None),
        session,
    }
}

impl Idp {
    fn key(&self, signer: Signer) -> Option<&SigningCredential> {
        match signer {
            Signer::Nobody => None,
            Signer::TargetSp => Some(&self.sp),
            Signer::OtherSp => Some(&self.other),
        }
    }

    fn canary_url(&self) -> String {
        format!("http://{}", self.canary.local_addr().unwrap())
    }

    /// Whether anything connected to the canary since the last look.
    fn canary_contacted(&self) -> bool {
        match self.canary.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("canary: {e}"),
        }
    }
}

// ----- filling, signing and sending ---------------------------------------------------

/// The genuine request of one run, signed, and the parts wrapping vectors reuse.
struct GenuineParts {
    /// Signed, without the XML declaration.
    signed: String,
    signature: String,
    /// `signed` without its Signature element (what that signature's digest covers).
    unsigned: String,
    digest_value: String,
    signature_value: String,
    certificate: String,
}

/// One run's values for the placeholders.
struct Run {
    id: String,
    attacker_id: String,
    now: OffsetDateTime,
    destination: String,
    canary: String,
    genuine: Option<GenuineParts>,
}

impl Run {
    fn new(idp: &Idp) -> Self {
        let mut run = Self {
            id: new_id(),
            attacker_id: new_id(),
            now: OffsetDateTime::now_utc(),
            destination: idp.server.public("/saml/sso"),
            canary: idp.canary_url(),
            genuine: None,
        };
        let genuine = load_vector(GENUINE);
        let signed = sign_post(&genuine, &run, idp);
        let signed = strip_declaration(&signed).to_owned();
        // What the wrapping vectors carry is a signature that verifies.
        idp_saml::crypto::verify_enveloped(&signed, &[idp.sp.certificate_der().to_vec()])
            .expect("the genuine request verifies");
        let (start, end) = find_element(&signed, "Signature").expect("a signature");
        let signature = signed[start..end].to_owned();
        let text = |local| {
            element_text(&signature, local)
                .unwrap_or_else(|| panic!("no {local} in {signature}"))
                .to_owned()
        };
        run.genuine = Some(GenuineParts {
            unsigned: format!("{}{}", &signed[..start], &signed[end..]),
            digest_value: text("DigestValue"),
            signature_value: text("SignatureValue"),
            certificate: text("X509Certificate"),
            signature,
            signed,
        });
        run
    }

    fn genuine(&self) -> &GenuineParts {
        self.genuine.as_ref().expect("genuine request")
    }

    /// The template with every placeholder but `{{SIGNATURE}}` filled.
    fn fill(&self, vector: &Vector) -> String {
        let issued = self.now + time::Duration::seconds(vector.issue_offset());
        let mut xml = vector
            .template
            .replace("{{ID}}", &self.id)
            .replace("{{ATTACKER_ID}}", &self.attacker_id)
            .replace("{{ISSUE_INSTANT}}", &instant(issued))
            .replace("{{DESTINATION}}", &self.destination)
            .replace("{{ISSUER}}", SP_ENTITY_ID)
            .replace("{{ACS}}", SP_ACS)
            .replace("{{OTHER_ISSUER}}", OTHER_ENTITY_ID)
            .replace("{{CANARY}}", &self.canary);
        if let Some(g) = &self.genuine {
            xml = xml
                .replace("{{GENUINE}}", &g.signed)
                .replace("{{GENUINE_SIGNATURE}}", &g.signature)
                .replace("{{GENUINE_UNSIGNED}}", &g.unsigned)
                .replace("{{DIGEST_VALUE}}", &g.digest_value)
                .replace("{{SIGNATURE_VALUE}}", &g.signature_value)
                .replace("{{CERTIFICATE}}", &g.certificate);
        }
        while let Some(at) = xml.find("{{PADDING:") {
            let len_end = at + xml[at..].find("}}").expect("padding end");
            let len: usize = xml[at + "{{PADDING:".len()..len_end].parse().unwrap();
            xml.replace_range(at..len_end + 2, &"A".repeat(len));
        }
        let left = xml.replace("{{SIGNATURE}}", "");
        assert!(
            !left.contains("{{"),
            "{}: unknown placeholder in {left}",
            vector.name
        );
        xml
    }
}

/// The vector as an HTTP-POST message: `{{SIGNATURE}}` becomes the signer's template for
/// the root, and the signer signs the first empty signature template (that one, or one
/// written in the vector).
fn sign_post(vector: &Vector, run: &Run, idp: &Idp) -> String {
    let xml = run.fill(vector);
    let key = idp.key(vector.signer());
    let template = match key {
        Some(key) if xml.contains("{{SIGNATURE}}") => key.template(&root_id(&xml)).unwrap(),
        _ => String::new(),
    };
    let xml = xml.replace("{{SIGNATURE}}", &template);
    let Some(key) = key else { return xml };
    let signed = key
        .sign(&xml)
        .unwrap_or_else(|e| panic!("{}: signing failed: {e}", vector.name));
    let (start, end) = find_element(&signed, "Signature").expect("signed");
    assert!(
        element_text(&signed[start..end], "SignatureValue").is_some_and(|v| !v.is_empty()),
        "{}: the signature was not computed",
        vector.name
    );
    signed
}

/// A message as sent.
enum Message {
    /// The XML (base64-encoded when sent).
    Post(String),
    /// The query string.
    Redirect(String),
}

fn build(vector: &Vector, binding: Binding, run: &Run, idp: &Idp) -> Message {
    match binding {
        Binding::Post => {
            let mut xml = sign_post(vector, run, idp);
            if let Some((from, to)) = vector.tamper() {
                assert!(xml.contains(from), "{}: nothing to tamper", vector.name);
                xml = xml.replacen(from, to, 1);
            }
            Message::Post(xml)
        }
        Binding::Redirect => {
            let xml = run.fill(vector).replace("{{SIGNATURE}}", "");
            let key = idp.key(vector.signer());
            let encode = |xml: &str| {
                idp_saml::redirect::encode(
                    "SAMLRequest",
                    xml,
                    Some(RELAY_STATE),
                    key.unwrap_or(&idp.sp),
                )
                .unwrap()
            };
            let mut query = encode(&xml);
            if key.is_none() {
                query = query.split("&SigAlg=").next().unwrap().to_owned();
            }
            if let Some((from, to)) = vector.tamper() {
                assert!(xml.contains(from), "{}: nothing to tamper", vector.name);
                let tampered = encode(&xml.replacen(from, to, 1));
                let message = query_param(&tampered, "SAMLRequest").unwrap();
                query = with_query_param(&query, "SAMLRequest", message);
            }
            if let Some(alg) = vector.field("sigalg") {
                assert!(query.contains("&SigAlg="), "{}: not signed", vector.name);
                query = with_query_param(&query, "SigAlg", &percent_encode(alg));
            }
            Message::Redirect(query)
        }
    }
}

/// What the IdP answered.
#[derive(Debug)]
struct Reply {
    status: u16,
    location: Option<String>,
    set_cookie: Vec<String>,
    body: String,
}

async fn send(idp: &Idp, message: &Message) -> Reply {
    let request = match message {
        Message::Post(xml) => idp
            .http
            .post(idp.server.public("/saml/sso"))
            .header(reqwest::header::ORIGIN, SP_ORIGIN)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!(
                "SAMLRequest={}&RelayState={}",
                percent_encode(&B64.encode(xml)),
                percent_encode(RELAY_STATE)
            )),
        Message::Redirect(query) => idp
            .http
            .get(idp.server.public(&format!("/saml/sso?{query}"))),
    };
    let request = match &idp.session {
        Some(cookie) => request.header(reqwest::header::COOKIE, cookie),
        None => request,
    };
    let response = request.send().await.expect("the IdP answers");
    let headers = response.headers();
    let location = headers
        .get(reqwest::header::LOCATION)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let set_cookie = headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
        .collect();
    Reply {
        status: response.status().as_u16(),
        location,
        set_cookie,
        body: response.text().await.unwrap_or_default(),
    }
}

/// Whether the IdP took the request: on to the login (anonymous), or an assertion for the
/// SP's ACS at once (logged in).
fn accepted(idp: &Idp, binding: Binding, reply: &Reply) -> Result<(), String> {
    let ok = if idp.session.is_some() {
        reply.status == 200
            && reply.body.contains(r#"name="SAMLResponse""#)
            && reply.body.contains(&format!(r#"action="{SP_ACS}""#))
    } else {
        let location = reply.location.as_deref().unwrap_or_default();
        reply.status == 303
            && match binding {
                // A cross-site POST carries no session: a same-site GET looks again.
                Binding::Post => location.starts_with("/saml/sso/continue?pending="),
                Binding::Redirect => {
                    location.starts_with("/login?return_to=") && location.contains("continue")
                }
            }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not accepted: {} {:?} {}",
            reply.status,
            reply.location,
            page_reason(&reply.body).unwrap_or_else(|| reply.body.chars().take(300).collect())
        ))
    }
}

/// Everything a refusal without side effects must not be.
fn refusal_problems(reply: &Reply, expect: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if reply.status != 400 {
        problems.push(format!("status {} instead of 400", reply.status));
    }
    if !reply.body.contains(REFUSAL_PAGE) {
        problems.push("not the refusal page".into());
    }
    match page_reason(&reply.body) {
        Some(reason) if reason.contains(expect) => {}
        reason => problems.push(format!("reason {reason:?}, expected {expect:?}")),
    }
    if !reply.set_cookie.is_empty() {
        problems.push(format!("Set-Cookie: {:?}", reply.set_cookie));
    }
    if let Some(location) = &reply.location {
        problems.push(format!("Location: {location}"));
    }
    if reply.body.contains("SAMLResponse") {
        problems.push("a SAMLResponse in the page (something was sent to an ACS)".into());
    }
    if reply.body.contains("root:x:0:0") {
        problems.push("file content (/etc/passwd) echoed in the page".into());
    }
    problems
}

/// Runs one vector; `Err` describes everything that went wrong.
async fn run_vector(idp: &Idp, vector: &Vector) -> Result<(), String> {
    let run = Run::new(idp);
    let binding = vector.binding();
    if let Some(first) = vector.first() {
        let reply = send(idp, &build(vector, first, &run, idp)).await;
        accepted(idp, first, &reply)
            .map_err(|e| format!("the genuine first sending was {e} (setup broken?)"))?;
    }
    let reply = send(idp, &build(vector, binding, &run, idp)).await;
    eprintln!(
        "[{}] {}: {} {:?}",
        if idp.session.is_some() {
            "logged in"
        } else {
            "anonymous"
        },
        vector.name,
        reply.status,
        page_reason(&reply.body).unwrap_or_default()
    );
    let mut problems = refusal_problems(&reply, vector.expect());
    if accepted(idp, binding, &reply).is_ok() {
        problems.insert(
            0,
            format!(
                "VULNERABILITY: the IdP ACCEPTED this attack ({} {:?})",
                reply.status, reply.location
            ),
        );
    }
    if idp.canary_contacted() {
        problems.push("VULNERABILITY: the IdP fetched a URL from the message (canary)".into());
    }
    let health = idp
        .http
        .get(idp.server.public("/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    if health.as_ref().ok() != Some(&200) {
        problems.push(format!("the IdP is not healthy afterwards: {health:?}"));
    }
    // No state left behind: the request's ID was not consumed by the refusal.
    if vector.first().is_none() {
        let reply = send(idp, &Message::Post(run.genuine().signed.clone())).await;
        if let Err(e) = accepted(idp, Binding::Post, &reply) {
            problems.push(format!(
                "the genuine request with the same ID was then {e} (state left behind?)"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

/// The control first (the genuine request over both bindings), then every vector.
async fn attack_all(logged_in: bool) {
    let idp = start_idp(logged_in).await;
    let genuine = load_vector(GENUINE);
    for binding in [Binding::Post, Binding::Redirect] {
        let run = Run::new(&idp);
        let reply = send(&idp, &build(&genuine, binding, &run, &idp)).await;
        if let Err(e) = accepted(&idp, binding, &reply) {
            panic!(
                "control: the genuine request over {binding:?} was {e}\nidp log:\n{}",
                idp.server.log()
            );
        }
    }
    let vectors = attack_vectors();
    assert!(vectors.len() >= 30, "only {} vectors", vectors.len());
    let mut failures = Vec::new();
    for vector in &vectors {
        if let Err(e) = run_vector(&idp, vector).await {
            failures.push(format!(
                "{} ({}):\n    {e}",
                vector.name,
                vector.field("attack").unwrap_or_default()
            ));
        }
    }
    let log = idp.server.log();
    assert!(!log.contains("panicked"), "the IdP panicked:\n{log}");
    let mode = if logged_in {
        "logged-in doctor"
    } else {
        "anonymous browser"
    };
    assert!(
        failures.is_empty(),
        "{} of {} attack vectors ({mode}) were not refused cleanly:\n\n{}\n\nidp log:\n{log}",
        failures.len(),
        vectors.len(),
        failures.join("\n\n")
    );
}

#[tokio::test]
async fn attacks_from_an_anonymous_browser_are_refused_without_side_effects() {
    attack_all(false).await;
}

#[tokio::test]
async fn attacks_on_a_logged_in_doctor_are_refused_without_side_effects() {
    attack_all(true).await;
}

/// Every vector parses, is described in the README with its expected refusal, and the
/// README names no vector that does not exist.
#[test]
fn the_readme_describes_every_vector() {
    let readme = std::fs::read_to_string(vectors_dir().join("README.md")).unwrap();
    let mut names = vec![load_vector(GENUINE)];
    names.extend(attack_vectors());
    for vector in &names {
        let file = format!("`{}.xml`", vector.name);
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {file} |")))
            .unwrap_or_else(|| panic!("README.md has no row for {file}"));
        assert!(
            row.contains(vector.expect()),
            "README.md's row for {file} does not give its expected refusal {:?}",
            vector.expect()
        );
    }
    for mention in readme.split('`').skip(1).step_by(2) {
        if let Some(name) = mention.strip_suffix(".xml") {
            assert!(
                names.iter().any(|v| v.name == name),
                "README.md names {mention}, which is not a vector"
            );
        }
    }
}
