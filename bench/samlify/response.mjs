// samlify producing the IdP's signed SAML login response, N times, single-threaded: the
// peer of `cargo bench -p idp-saml --bench response` (docs/BENCHMARKS.md, "SAML responses";
// run both with scripts/bench-saml.sh).
//
// The response is the one idp_saml::response::success writes for the test doctor (see
// idp/saml/benches/response.rs): same elements and attributes in the same order, Japanese
// values, a persistent NameID with NameQualifier/SPNameQualifier, an AuthnStatement with
// SessionIndex and SmartcardPKI, bearer SubjectConfirmation with InResponseTo, RSA-SHA256
// with SHA-256 digests and exclusive c14n. It goes through samlify's public API,
// `IdentityProvider#createLoginResponse(sp, request, 'post', user, customTagReplacement)`,
// with a custom `loginResponseTemplate` (samlify's documented way to send attributes);
// samlify signs the Assertion because the SP's metadata says `WantAssertionsSigned`, and
// the Response because the SP entity says `wantMessageSigned` (variant "signed response
// and assertion"), or only the Assertion (variant "assertion only"). samlify returns the
// base64 of the document (the HTTP-POST form value): that encoding is in its figure.
//
// No XML schema validator: samlify validates only what it parses (requests, responses
// received), never what it generates, so the benchmark sets a no-op validator
// (`setSchemaValidator({ validate: () => Promise.resolve('skipped') })`) to keep
// @authenio/samlify-xsd-schema-validator (a Java-backed validator) out of it.
//
// Usage: node response.mjs --key KEY.pem --cert CERT.pem [--seconds 10] [--warmup-seconds 3]
//        [--variant both|signed-response|assertion-only] [--sample-dir DIR] [--json FILE]
// Prints one line per variant and, with --json, writes
// [{variant, count, seconds, per_second, mean_us, p50_us, p99_us, bytes}, ...].

import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const require = createRequire(import.meta.url);
const samlify = require('samlify');
const samlifyVersion = require('samlify/package.json').version;
// The XML signature library samlify signs with, for the one-time check of its output.
const requireFromSamlify = createRequire(require.resolve('samlify'));
const { SignedXml } = requireFromSamlify('xml-crypto');
const { DOMParser } = requireFromSamlify('@xmldom/xmldom');
const xpath = requireFromSamlify('xpath');

const { IdentityProvider, ServiceProvider, SamlLib, Constants, setSchemaValidator } = samlify;

function args() {
  const out = {
    seconds: 10,
    warmupSeconds: 3,
    variant: 'both',
    sampleDir: null,
    json: null,
    key: null,
    cert: null,
  };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 1) {
    const next = () => {
      i += 1;
      if (i >= argv.length) throw new Error(`${argv[i - 1]} needs a value`);
      return argv[i];
    };
    switch (argv[i]) {
      case '--seconds': out.seconds = Number(next()); break;
      case '--warmup-seconds': out.warmupSeconds = Number(next()); break;
      case '--variant': out.variant = next(); break;
      case '--sample-dir': out.sampleDir = next(); break;
      case '--json': out.json = next(); break;
      case '--key': out.key = next(); break;
      case '--cert': out.cert = next(); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!out.key || !out.cert) throw new Error('--key and --cert are required');
  return out;
}

// The same values as idp/saml/benches/response.rs.
const ISSUER = 'https://localhost:8443/saml/metadata';
const SP_ENTITY_ID = 'https://sp.bench.example/saml';
const ACS_URL = 'https://sp.bench.example/saml/acs';
const REQUEST_ID = '_3f1c9a0e7b5d4c2a8e6f0b1d3c5a7e9f';
const NAME_ID = 'q3Vx0mJ6bK2pN8sT4wY7zA1cE5gH9iL0oR3uW6yB2dF';
const SESSION_INDEX = '3e4e7f72d6b8b0ce81d3b3c53083afec';
const PERSISTENT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent';
const SMARTCARD_PKI = 'urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI';
const URI = 'urn:oasis:names:tc:SAML:2.0:attrname-format:uri';
const CLAIM = 'urn:jp:hpki-idp:claim:';
// [attribute name, FriendlyName or null, template tag, value]: exactly what a live login
// releases for the test doctor, in the IdP's order (sorted by name).
const ATTRIBUTES = [
  [`${CLAIM}family_name:ja-Hani-JP`, null, 'attrFamilyNameHani', '日医'],
  [`${CLAIM}family_name:ja-Kana-JP`, null, 'attrFamilyNameKana', 'ニチイ'],
  [`${CLAIM}given_name:ja-Hani-JP`, null, 'attrGivenNameHani', '太郎'],
  [`${CLAIM}given_name:ja-Kana-JP`, null, 'attrGivenNameKana', 'タロウ'],
  [`${CLAIM}name:ja-Hani-JP`, null, 'attrNameHani', '日医\u3000太郎'],
  [`${CLAIM}name:ja-Kana-JP`, null, 'attrNameKana', 'ニチイ\u3000タロウ'],
  ['urn:oid:0.9.2342.19200300.100.1.3', 'mail', 'attrMail', 'doctor@test.invalid'],
  ['urn:oid:1.2.392.100495.1.6.1.1', 'hcRole', 'attrHcRole', 'Medical Doctor'],
  ['urn:oid:2.16.840.1.113730.3.1.241', 'displayName', 'attrDisplayName', '日医\u3000太郎'],
  ['urn:oid:2.5.4.4', 'sn', 'attrSn', 'NICHII'],
  ['urn:oid:2.5.4.42', 'givenName', 'attrGivenName', 'TARO'],
];
const MAIL = 'doctor@test.invalid';

const attributeStatement = `<saml:AttributeStatement>${ATTRIBUTES.map(
  ([name, friendly, tag]) =>
    `<saml:Attribute Name="${name}" NameFormat="${URI}"${friendly ? ` FriendlyName="${friendly}"` : ''}><saml:AttributeValue xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="xs:string">{${tag}}</saml:AttributeValue></saml:Attribute>`,
).join('')}</saml:AttributeStatement>`;

const TEMPLATE =
  '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{ID}" Version="2.0" IssueInstant="{IssueInstant}" Destination="{Destination}" InResponseTo="{InResponseTo}">' +
  '<saml:Issuer>{Issuer}</saml:Issuer>' +
  '<samlp:Status><samlp:StatusCode Value="{StatusCode}"/></samlp:Status>' +
  '<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{AssertionID}" Version="2.0" IssueInstant="{IssueInstant}">' +
  '<saml:Issuer>{Issuer}</saml:Issuer>' +
  '<saml:Subject><saml:NameID Format="{NameIDFormat}" NameQualifier="{Issuer}" SPNameQualifier="{Audience}">{NameID}</saml:NameID>' +
  '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="{SubjectConfirmationDataNotOnOrAfter}" Recipient="{SubjectRecipient}" InResponseTo="{InResponseTo}"/></saml:SubjectConfirmation></saml:Subject>' +
  '<saml:Conditions NotBefore="{ConditionsNotBefore}" NotOnOrAfter="{ConditionsNotOnOrAfter}"><saml:AudienceRestriction><saml:Audience>{Audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions>' +
  '<saml:AuthnStatement AuthnInstant="{AuthnInstant}" SessionIndex="{SessionIndex}" SessionNotOnOrAfter="{SessionNotOnOrAfter}"><saml:AuthnContext><saml:AuthnContextClassRef>{AuthnContextClassRef}</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>' +
  attributeStatement +
  '</saml:Assertion></samlp:Response>';

// The IdP's instants: seconds, UTC, `Z`.
const instant = (ms) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
const newId = () => `_${randomBytes(20).toString('hex')}`;

function entities(keyPem, certPem, signResponse) {
  const idp = IdentityProvider({
    entityID: ISSUER,
    privateKey: keyPem,
    signingCert: certPem,
    requestSignatureAlgorithm: Constants.algorithms.signature.RSA_SHA256,
    nameIDFormat: [PERSISTENT],
    generateID: newId,
    singleSignOnService: [
      { Binding: Constants.namespace.binding.redirect, Location: 'https://localhost:8443/saml/sso' },
    ],
    singleLogoutService: [
      { Binding: Constants.namespace.binding.redirect, Location: 'https://localhost:8443/saml/slo' },
    ],
    loginResponseTemplate: { context: TEMPLATE, attributes: [] },
  });
  const sp = ServiceProvider({
    entityID: SP_ENTITY_ID,
    authnRequestsSigned: false,
    wantAssertionsSigned: true,
    wantMessageSigned: signResponse,
    assertionConsumerService: [{ Binding: Constants.namespace.binding.post, Location: ACS_URL }],
  });
  return { idp, sp };
}

// The values of one response (samlify's customTagReplacement callback: the template in,
// `{ id, context }` out; replaceTagsByValue XML-escapes every value).
function fill(idp, sp) {
  return (template) => {
    const now = Date.now();
    const id = newId();
    const notOnOrAfter = instant(now + 300_000);
    const values = {
      ID: id,
      AssertionID: newId(),
      Destination: ACS_URL,
      Audience: sp.entityMeta.getEntityID(),
      SubjectRecipient: ACS_URL,
      Issuer: idp.entityMeta.getEntityID(),
      IssueInstant: instant(now),
      StatusCode: Constants.StatusCode.Success,
      ConditionsNotBefore: instant(now - 60_000),
      ConditionsNotOnOrAfter: notOnOrAfter,
      SubjectConfirmationDataNotOnOrAfter: notOnOrAfter,
      NameIDFormat: PERSISTENT,
      NameID: NAME_ID,
      InResponseTo: REQUEST_ID,
      AuthnInstant: instant(now),
      SessionIndex: SESSION_INDEX,
      SessionNotOnOrAfter: instant(now + 8 * 3600_000),
      AuthnContextClassRef: SMARTCARD_PKI,
      ...Object.fromEntries(ATTRIBUTES.map(([, , tag, value]) => [tag, value])),
    };
    return { id, context: SamlLib.replaceTagsByValue(template, values) };
  };
}

const REQUEST = { extract: { request: { id: REQUEST_ID } } };

async function one(idp, sp) {
  const { context } = await idp.createLoginResponse(sp, REQUEST, 'post', { email: MAIL }, fill(idp, sp));
  return context;
}

// Checks one output: the number of signatures, the algorithms, the values, and that every
// signature verifies with the certificate (xml-crypto, as an SP using samlify would).
function check(xml, certPem, signatures) {
  const count = (xml.match(/<ds:SignatureValue>/g) || []).length;
  if (count !== signatures) throw new Error(`${count} signatures, expected ${signatures}`);
  for (const must of [
    'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
    'http://www.w3.org/2001/04/xmlenc#sha256',
    'http://www.w3.org/2001/10/xml-exc-c14n#',
    '日医\u3000太郎',
    'ニチイ\u3000タロウ',
    `InResponseTo="${REQUEST_ID}"`,
    'SessionIndex=',
  ]) {
    if (!xml.includes(must)) throw new Error(`the response lacks ${must}`);
  }
  if (xml.includes('sha1')) throw new Error('SHA-1 in the response');
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  const nodes = xpath.select("//*[local-name(.)='Signature' and namespace-uri(.)='http://www.w3.org/2000/09/xmldsig#']", doc);
  for (const node of nodes) {
    const sig = new SignedXml({ publicCert: certPem });
    sig.loadSignature(node);
    if (!sig.checkSignature(xml)) throw new Error('a samlify signature does not verify');
  }
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function measure(variant, keyPem, certPem, opts) {
  const signResponse = variant === 'signed-response';
  const { idp, sp } = entities(keyPem, certPem, signResponse);
  const sample = Buffer.from(await one(idp, sp), 'base64').toString('utf8');
  check(sample, certPem, signResponse ? 2 : 1);
  if (opts.sampleDir) {
    const file = signResponse ? 'samlify-signed-response.xml' : 'samlify-assertion-only.xml';
    writeFileSync(join(opts.sampleDir, file), sample);
  }
  const warmupEnd = performance.now() + opts.warmupSeconds * 1000;
  while (performance.now() < warmupEnd) await one(idp, sp);
  const times = [];
  const start = performance.now();
  const end = start + opts.seconds * 1000;
  let t = start;
  while (t < end) {
    await one(idp, sp);
    const after = performance.now();
    times.push(after - t);
    t = after;
  }
  const seconds = (t - start) / 1000;
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  return {
    variant,
    samlify: samlifyVersion,
    node: process.version,
    count: times.length,
    seconds,
    per_second: times.length / seconds,
    mean_us: mean * 1000,
    p50_us: quantile(times, 0.5) * 1000,
    p99_us: quantile(times, 0.99) * 1000,
    bytes: Buffer.byteLength(sample),
  };
}

async function main() {
  const opts = args();
  setSchemaValidator({ validate: () => Promise.resolve('skipped') });
  const keyPem = readFileSync(opts.key, 'utf8');
  const certPem = readFileSync(opts.cert, 'utf8');
  const variants = opts.variant === 'both' ? ['signed-response', 'assertion-only'] : [opts.variant];
  const results = [];
  for (const variant of variants) {
    const r = await measure(variant, keyPem, certPem, opts);
    results.push(r);
    console.log(
      `samlify ${r.samlify} (node ${r.node}) ${variant}: ${r.count} responses in ${r.seconds.toFixed(1)} s: ` +
        `${r.per_second.toFixed(1)}/s; mean ${r.mean_us.toFixed(0)} µs, p50 ${r.p50_us.toFixed(0)} µs, ` +
        `p99 ${r.p99_us.toFixed(0)} µs; ${r.bytes} bytes, signatures verified`,
    );
  }
  if (opts.json) writeFileSync(opts.json, JSON.stringify(results, null, 2));
}

main().catch((e) => {
  console.error(`samlify bench: ${e.stack || e}`);
  process.exit(1);
});
