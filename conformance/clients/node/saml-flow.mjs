// One SAML 2.0 SP-initiated login against a live IdP with @node-saml/node-saml as the
// service provider (an SP library independent of pysaml2: xml-crypto for signatures,
// xmldom for parsing).
//
// MODE=metadata prints the SP's metadata (node-saml's generateServiceProviderMetadata,
// with the SP's signing certificate) for the IdP to register.
// MODE=login (the default) loads the IdP's metadata from its URL (TLS verified against the
// test root), takes the IdP's signing certificate and SSO URL from it, sends an
// AuthnRequest by HTTP-Redirect signed with RSA-SHA256, walks the browser leg with the
// doctor's card presented on the login origin only (approving consent when asked), takes
// the auto-POSTed Response and lets node-saml validate it: the Response and Assertion
// signatures against the metadata's certificate, InResponseTo (against its request cache),
// SubjectConfirmationData and Conditions NotBefore/NotOnOrAfter, Audience. node-saml does
// not compare the Response's Destination, the SubjectConfirmationData's Recipient or the
// Issuer with anything: this script checks those on what node-saml verified.
//
// Prints one JSON object on stdout: {"ok": true, ...results} or {"ok": false, "error": ...}.
// Exits non-zero on any failure.
//
// Environment: MODE; SP_ENTITY_ID, ACS_URL, SP_KEY, SP_CERT (PEM, the SP's signing key);
// IDP_METADATA_URL, CA_FILE, CARD_CERT (PEM chain, leaf first), CARD_KEY (login);
// TAMPER=attribute alters a signed attribute value in the Response before node-saml sees
// it (the validation must refuse it).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { inflateRawSync } from 'node:zlib';
import { SAML, generateServiceProviderMetadata } from '@node-saml/node-saml';
import { makeBrowser } from './browser.mjs';

// The XML parser and XPath engine node-saml itself uses, resolved from node-saml's package.
const requireFromNodeSaml = createRequire(
  createRequire(import.meta.url).resolve('@node-saml/node-saml'),
);
const { DOMParser } = requireFromNodeSaml('@xmldom/xmldom');
const xpath = requireFromNodeSaml('xpath');

const MD = 'urn:oasis:names:tc:SAML:2.0:metadata';
const DS = 'http://www.w3.org/2000/09/xmldsig#';
const HTTP_REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
const PERSISTENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent';
const SMARTCARD_PKI = 'urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI';
const HC_ROLE = 'urn:oid:1.2.392.100495.1.6.1.1';
const SN = 'urn:oid:2.5.4.4';
const GIVEN_NAME = 'urn:oid:2.5.4.42';

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback !== undefined) return fallback;
    throw new Error(`${name} is not set`);
  }
  return value;
}

class FlowError extends Error {
  constructor(message, details = {}) {
    super(message);
    this.name = 'FlowError';
    this.details = details;
  }
}

const steps = [];
const closers = [];

// ----- the service provider ----------------------------------------------------------

function spSettings() {
  return {
    issuer: env('SP_ENTITY_ID'),
    callbackUrl: env('ACS_URL'),
    privateKey: readFileSync(env('SP_KEY'), 'utf8'),
    publicCerts: readFileSync(env('SP_CERT'), 'utf8'),
    identifierFormat: PERSISTENT,
    wantAssertionsSigned: true,
    signatureAlgorithm: 'sha256',
    digestAlgorithm: 'sha256',
  };
}

function metadata() {
  return generateServiceProviderMetadata(spSettings());
}

// ----- the IdP's metadata ------------------------------------------------------------

function select(expression, node) {
  return xpath.useNamespaces({ md: MD, ds: DS })(expression, node);
}

function parseIdpMetadata(xml) {
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  const entity = select('/md:EntityDescriptor', doc)[0];
  if (!entity) throw new FlowError('IdP metadata without an EntityDescriptor');
  const idp = select('md:IDPSSODescriptor', entity)[0];
  if (!idp) throw new FlowError('IdP metadata without an IDPSSODescriptor');
  const certs = select(
    "md:KeyDescriptor[not(@use) or @use='signing']/ds:KeyInfo/ds:X509Data/ds:X509Certificate",
    idp,
  ).map((n) => n.textContent.replace(/\s+/g, ''));
  if (certs.length === 0) throw new FlowError('IdP metadata without a signing certificate');
  const sso = select(`md:SingleSignOnService[@Binding='${HTTP_REDIRECT}']/@Location`, idp)[0];
  if (!sso) throw new FlowError('IdP metadata without an HTTP-Redirect SingleSignOnService');
  return {
    entityId: entity.getAttribute('entityID'),
    base64Certs: certs,
    certs: certs.map((b64) => {
      const lines = b64.match(/.{1,64}/g).join('\n');
      return `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`;
    }),
    ssoUrl: sso.value,
  };
}

// ----- the browser -------------------------------------------------------------------

function unescapeHtml(text) {
  return text
    .replaceAll('&quot;', '"')
    .replaceAll('&#x27;', "'")
    .replaceAll('&#39;', "'")
    .replaceAll('&lt;', '<')
    .replaceAll('&gt;', '>')
    .replaceAll('&amp;', '&');
}

function field(html, name) {
  const match = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  return match ? unescapeHtml(match[1]) : undefined;
}

// From the SSO URL with the AuthnRequest to the auto-POST form for the ACS.
async function browserLeg(browse, start) {
  let url = start;
  let response = await browse(url);
  for (let hop = 0; hop < 12; hop += 1) {
    if ((response.status === 302 || response.status === 303) && response.location) {
      url = response.location;
      response = await browse(url);
      continue;
    }
    const text = response.text;
    if (response.status === 200 && text.includes('action="/saml/sso/consent"')) {
      const pending = field(text, 'pending');
      if (!pending) throw new FlowError('consent page without a pending request');
      url = new URL('/saml/sso/consent', url);
      response = await browse(url, {
        method: 'POST',
        form: { pending, lang: 'en', decision: 'approve' },
      });
      continue;
    }
    if (response.status === 200 && text.includes('name="SAMLResponse"')) {
      const action = text.match(/<form method="post" action="([^"]*)"/);
      const message = field(text, 'SAMLResponse');
      if (!action || !message) throw new FlowError('auto-POST page without a form');
      return {
        action: unescapeHtml(action[1]),
        SAMLResponse: message,
        RelayState: field(text, 'RelayState'),
        csp: response.headers['content-security-policy'] ?? '',
      };
    }
    const reason = text.match(/data-reason="([^"]*)"/);
    throw new FlowError(`browser leg stopped at ${url.pathname} with ${response.status}`, {
      reason: reason ? reason[1] : undefined,
    });
  }
  throw new FlowError('too many steps in the browser leg');
}

function tamper(samlResponse) {
  const xml = Buffer.from(samlResponse, 'base64').toString('utf8');
  const forged = xml.replace('Medical Doctor', 'Pharmacist');
  if (forged === xml) throw new FlowError('nothing to tamper with');
  return Buffer.from(forged, 'utf8').toString('base64');
}

// The first value of an xml2js child element (node-saml's parsed assertion).
function first(node, name) {
  const list = node?.[name];
  return Array.isArray(list) ? list[0] : undefined;
}

async function login() {
  const metadataUrl = new URL(env('IDP_METADATA_URL'));
  const publicOrigin = metadataUrl.origin;
  const browser = makeBrowser({
    publicOrigin,
    caFile: env('CA_FILE'),
    cardCert: env('CARD_CERT'),
    cardKey: env('CARD_KEY'),
    steps,
  });
  closers.push(browser.close);
  const { browse } = browser;
  const fetched = await browse(metadataUrl);
  if (fetched.status !== 200) throw new FlowError(`metadata: HTTP ${fetched.status}`);
  const idp = parseIdpMetadata(fetched.text);

  const sp = spSettings();
  const saml = new SAML({
    ...sp,
    idpCert: idp.certs,
    audience: sp.issuer,
    entryPoint: idp.ssoUrl,
    wantAuthnResponseSigned: true,
    validateInResponseTo: 'always',
    acceptedClockSkewMs: 5000,
    authnContext: [SMARTCARD_PKI],
    racComparison: 'exact',
  });
  const authorizeUrl = await saml.getAuthorizeUrlAsync('relay-123', undefined, {});
  const sent = new URL(authorizeUrl);
  const form = await browserLeg(browse, sent);
  const requestXml = inflateRawSync(
    Buffer.from(sent.searchParams.get('SAMLRequest'), 'base64'),
  ).toString('utf8');
  const requestId = requestXml.match(/ ID="([^"]+)"/)?.[1];

  const message =
    env('TAMPER', 'none') === 'attribute' ? tamper(form.SAMLResponse) : form.SAMLResponse;
  const { profile, loggedOut } = await saml.validatePostResponseAsync({
    SAMLResponse: message,
    RelayState: form.RelayState,
  });
  if (!profile || loggedOut) throw new FlowError('node-saml returned no profile');

  // What node-saml leaves to the caller, checked on the Assertion it verified (and on the
  // Response whose signature it verified).
  const assertion = profile.getAssertion().Assertion;
  const subject = first(assertion, 'Subject');
  const recipients = (subject?.SubjectConfirmation ?? []).map(
    (c) => first(c, 'SubjectConfirmationData')?.$?.Recipient,
  );
  if (!recipients.includes(sp.callbackUrl)) {
    throw new FlowError('no SubjectConfirmationData for this ACS', { recipients });
  }
  const responseDoc = new DOMParser().parseFromString(profile.getSamlResponseXml(), 'text/xml');
  const destination = responseDoc.documentElement.getAttribute('Destination');
  if (destination !== sp.callbackUrl) {
    throw new FlowError('the Response is for another Destination', { destination });
  }
  if (profile.issuer !== idp.entityId) {
    throw new FlowError('the Assertion is from another Issuer', { issuer: profile.issuer });
  }
  if (form.action !== sp.callbackUrl) {
    throw new FlowError('the auto-POST form goes elsewhere', { action: form.action });
  }
  const authnStatement = first(assertion, 'AuthnStatement');
  const authnContext = first(first(authnStatement, 'AuthnContext'), 'AuthnContextClassRef');

  return {
    library: '@node-saml/node-saml',
    idp_entity_id: idp.entityId,
    idp_sso_url: idp.ssoUrl,
    idp_certs: idp.base64Certs,
    request_id: requestId,
    request_sig_alg: sent.searchParams.get('SigAlg'),
    request_signed: sent.searchParams.has('Signature'),
    acs: form.action,
    relay_state: form.RelayState,
    csp: form.csp,
    destination,
    recipients,
    nameID: profile.nameID,
    nameIDFormat: profile.nameIDFormat,
    inResponseTo: profile.inResponseTo,
    sessionIndex: profile.sessionIndex,
    issuer: profile.issuer,
    authn_context: typeof authnContext === 'string' ? authnContext : authnContext?._,
    hcRole: profile[HC_ROLE],
    sn: profile[SN],
    givenName: profile[GIVEN_NAME],
    attributes: profile.attributes,
    response_xml: Buffer.from(form.SAMLResponse, 'base64').toString('utf8'),
    steps,
  };
}

try {
  if (env('MODE', 'login') === 'metadata') {
    process.stdout.write(`${JSON.stringify({ ok: true, metadata: metadata() })}\n`);
  } else {
    const result = await login();
    process.stdout.write(`${JSON.stringify({ ok: true, ...result })}\n`);
  }
} catch (error) {
  // Every failure becomes JSON for the test to assert on.
  const out = {
    ok: false,
    error: {
      name: error?.name,
      message: String(error?.message ?? error),
      ...(error?.details ?? {}),
    },
    steps,
  };
  if (error?.xmlStatus) out.error.xml_status = error.xmlStatus;
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exitCode = 1;
} finally {
  await Promise.allSettled(closers.map((close) => close()));
}
