// node `oidc-provider` configured like the IdP's benchmark clients, for the side-by-side
// load benchmark (docs/BENCHMARKS.md, "OpenID Connect flows under load";
// scripts/bench-oidc.sh starts it). The authorization-code flow is driven by
// bench/load (`--mode oidc-provider-flow`):
//
//   GET /auth (no session) -> 303 /interaction/:uid
//   GET /interaction/:uid  -> logs the fixed account in, no UI (there is no card: no mTLS)
//                          -> 303 /auth/:uid
//   GET /auth/:uid         -> consent already granted (pre-approved client, below)
//                          -> 303 https://rp.example/cb?code=...
//   POST /token (client_secret_basic, PKCE S256 verifier) -> ID token
//
// Environment: PORT (default 9443), ISSUER (default https://localhost:PORT), TLS_CERT and
// TLS_KEY (PEM; served over HTTPS with them, over plain HTTP without), CLIENT_SECRET
// (required). Clients: `bench-es256` and `bench-rs256`, differing only in
// id_token_signed_response_alg. Storage: the provider's built-in in-memory adapter.
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 9443);
const tls = process.env.TLS_CERT && process.env.TLS_KEY;
const issuer = process.env.ISSUER ?? `${tls ? 'https' : 'http'}://localhost:${port}`;
const secret = process.env.CLIENT_SECRET;
if (!secret) {
  console.error('CLIENT_SECRET is required');
  process.exit(2);
}
const REDIRECT = 'https://rp.example/cb';
const ACCOUNT = 'JMA-TEST-000001';

// One signing key per algorithm, as the IdP has (RSA 2048 and P-256), made at start.
const jwk = (alg, pair) => ({
  ...pair.privateKey.export({ format: 'jwk' }),
  kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}`,
  alg,
  use: 'sig',
});
const keys = [
  jwk('RS256', generateKeyPairSync('rsa', { modulusLength: 2048 })),
  jwk('ES256', generateKeyPairSync('ec', { namedCurve: 'P-256' })),
];

// The fixed account: the test PKI's doctor, with claims of the same scopes the IdP's
// benchmark clients ask for (profile and hpki).
const profile = {
  name: '日医 太郎',
  family_name: '日医',
  given_name: '太郎',
  'family_name#ja-Kana-JP': 'ニチイ',
  'given_name#ja-Kana-JP': 'タロウ',
  gender: 'male',
  birthdate: '1975-04-01',
  hpki_role: 'Medical Doctor',
  hpki_issuer: 'HPKI Test JMA CA',
};

const client = (alg) => ({
  client_id: `bench-${alg.toLowerCase()}`,
  client_secret: secret,
  token_endpoint_auth_method: 'client_secret_basic',
  redirect_uris: [REDIRECT],
  response_types: ['code'],
  grant_types: ['authorization_code', 'refresh_token'],
  scope: 'openid profile hpki offline_access',
  id_token_signed_response_alg: alg,
  subject_type: 'pairwise',
});

const provider = new Provider(issuer, {
  clients: [client('ES256'), client('RS256')],
  jwks: { keys },
  // Signed cookies, as any deployment has.
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'hpki'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'family_name', 'given_name', 'family_name#ja-Kana-JP',
      'given_name#ja-Kana-JP', 'gender', 'birthdate'],
    hpki: ['hpki_role', 'hpki_issuer'],
  },
  // The IdP puts the released claims in the ID token too.
  conformIdTokenClaims: false,
  subjectTypes: ['public', 'pairwise'],
  pairwiseIdentifier: async (ctx, accountId, c) => createHash('sha256')
    .update(`${c.sectorIdentifier}\0${accountId}\0bench-pairwise-salt`)
    .digest('base64url'),
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
  },
  async findAccount(ctx, sub) {
    if (sub !== ACCOUNT) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...profile };
      },
    };
  },
  // Consent already granted (the IdP's `pre_approved`): a first-party client's grant
  // covers what it asks for, the pattern oidc-provider documents for skipping consent.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.params.scope);
    await grant.save();
    return grant;
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

// The interaction needs no UI: `login` logs the fixed account in (where the IdP has the
// card login); `consent` (only when prompt=consent was asked for, which oidc-provider
// requires for offline_access) grants what was asked.
provider.use(async (ctx, next) => {
  if (ctx.method !== 'GET' || !ctx.path.startsWith('/interaction/')) {
    return next();
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === 'login') {
    result = { login: { accountId: ACCOUNT } };
  } else if (details.prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    result = { consent: { grantId: await grant.save() } };
  } else {
    ctx.status = 400;
    ctx.body = `unexpected prompt ${details.prompt.name}`;
    return undefined;
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: true,
  });
  ctx.redirect(returnTo);
  ctx.status = 303;
  return undefined;
});

const callback = provider.callback();
const server = tls
  ? https.createServer({ cert: readFileSync(process.env.TLS_CERT), key: readFileSync(process.env.TLS_KEY) }, callback)
  : http.createServer(callback);
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider ${issuer} listening on 127.0.0.1:${port} (${tls ? 'HTTPS' : 'HTTP'})`);
});
