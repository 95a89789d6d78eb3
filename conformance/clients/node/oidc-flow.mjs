// One OpenID Connect login against a live IdP with openid-client (the certified Node
// relying-party library): discovery, authorization code flow with PKCE S256, state and
// nonce, the browser leg with the doctor's card certificate presented on the login origin
// only, the code exchange with full ID token validation (signature against the JWKS, iss,
// aud, exp, nonce, RFC 9207 iss), userinfo and refresh.
//
// Prints one JSON object on stdout: {"ok": true, ...results} or {"ok": false, "error": ...}.
// Exits non-zero on any failure.
//
// Environment:
//   ISSUER         the IdP's issuer (its public origin)
//   CA_FILE        PEM file of the root the IdP's TLS certificates chain to
//   CARD_CERT      PEM certificate chain of the card (leaf first)
//   CARD_KEY       PEM private key of the card
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI
//   AUTH_METHOD    client_secret_basic (default) or client_secret_post
//   ID_TOKEN_ALG   the registered id_token_signed_response_alg (default RS256)
//   SCOPE          default "openid profile email hpki offline_access"
//   TAMPER         "id_token": alter the ID token's payload in the token response (the
//                  library must refuse it)
import * as oidc from 'openid-client';
import { fetch, Headers, Response } from 'undici';
import { makeBrowser } from './browser.mjs';

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback !== undefined) return fallback;
    throw new Error(`${name} is not set`);
  }
  return value;
}

const issuer = new URL(env('ISSUER'));
const clientId = env('CLIENT_ID');
const clientSecret = env('CLIENT_SECRET');
const redirectUri = env('REDIRECT_URI');
const authMethod = env('AUTH_METHOD', 'client_secret_basic');
const idTokenAlg = env('ID_TOKEN_ALG', 'RS256');
const scope = env('SCOPE', 'openid profile email hpki offline_access');
const tamper = env('TAMPER', 'none');

const steps = [];
const { browse, publicAgent, close } = makeBrowser({
  publicOrigin: issuer.origin,
  caFile: env('CA_FILE'),
  cardCert: env('CARD_CERT'),
  cardKey: env('CARD_KEY'),
  steps,
});

function tamperIdToken(idToken) {
  const [header, payload, signature] = idToken.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  claims.hpki_role = 'Pharmacist';
  claims.sub = `${claims.sub}x`;
  const forged = Buffer.from(JSON.stringify(claims), 'utf8').toString('base64url');
  return `${header}.${forged}.${signature}`;
}

// Every request openid-client makes goes through undici with the test root trusted.
async function libraryFetch(url, options) {
  const response = await fetch(url, { ...options, dispatcher: publicAgent });
  steps.push(`${options?.method ?? 'GET'} ${new URL(url).pathname} ${response.status}`);
  const isToken = new URL(url).pathname === '/token';
  if (tamper === 'id_token' && isToken && response.ok) {
    const body = await response.json();
    if (body.id_token) body.id_token = tamperIdToken(body.id_token);
    const headers = new Headers(response.headers);
    headers.delete('content-length');
    return new Response(JSON.stringify(body), { status: response.status, headers });
  }
  return response;
}

// ----- the browser -------------------------------------------------------------------

function hidden(html, name) {
  const match = html.match(new RegExp(`<input type="hidden" name="${name}" value="([^"]*)"`));
  return match ? match[1].replaceAll('&amp;', '&') : undefined;
}

// Walks from the authorization URL to the redirect carrying the code; returns that URL.
async function browserLeg(authorizationUrl) {
  const redirect = new URL(redirectUri);
  let url = authorizationUrl;
  for (let hop = 0; hop < 12; hop += 1) {
    const response = await browse(url);
    if (response.status === 303 || response.status === 302) {
      const next = response.location;
      if (next.origin === redirect.origin && next.pathname === redirect.pathname) return next;
      url = next;
      continue;
    }
    if (response.status === 200 && response.text.includes('action="/authorize/consent"')) {
      const pending = hidden(response.text, 'pending');
      if (!pending) throw new Error('consent page without a pending request');
      const consent = await browse(new URL('/authorize/consent', url), {
        method: 'POST',
        form: { pending, lang: 'en', decision: 'approve' },
      });
      if (consent.status !== 303) throw new Error(`consent answered ${consent.status}`);
      url = consent.location;
      if (url.origin === redirect.origin && url.pathname === redirect.pathname) return url;
      continue;
    }
    const reason = response.text.match(/data-reason="([^"]*)"/);
    throw new Error(
      `browser leg stopped at ${url.pathname} with ${response.status}${reason ? ` (${reason[1]})` : ''}`,
    );
  }
  throw new Error('too many redirects in the browser leg');
}

// ----- the relying party -------------------------------------------------------------

async function run() {
  const clientAuth =
    authMethod === 'client_secret_post'
      ? oidc.ClientSecretPost(clientSecret)
      : oidc.ClientSecretBasic(clientSecret);
  const config = await oidc.discovery(
    issuer,
    clientId,
    { id_token_signed_response_alg: idTokenAlg, redirect_uris: [redirectUri] },
    clientAuth,
    {
      [oidc.customFetch]: libraryFetch,
      // Also verify ID token signatures against the JWKS (by default the library relies
      // on the TLS-authenticated token endpoint alone).
      execute: [oidc.enableNonRepudiationChecks],
    },
  );
  const metadata = config.serverMetadata();

  const codeVerifier = oidc.randomPKCECodeVerifier();
  const codeChallenge = await oidc.calculatePKCECodeChallenge(codeVerifier);
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const authorizationUrl = oidc.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  });

  const callback = await browserLeg(authorizationUrl);

  const tokens = await oidc.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const idTokenHeader = JSON.parse(
    Buffer.from(tokens.id_token.split('.')[0], 'base64url').toString('utf8'),
  );
  const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);

  if (!tokens.refresh_token) throw new Error('no refresh_token in the token response');
  const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token);
  const refreshedClaims = refreshed.id_token ? refreshed.claims() : undefined;
  if (refreshedClaims && refreshedClaims.sub !== claims.sub) {
    throw new Error('the refreshed ID token names another subject');
  }
  // The refreshed access token works.
  const userinfoAfterRefresh = await oidc.fetchUserInfo(config, refreshed.access_token, claims.sub);

  return {
    ok: true,
    library: 'openid-client',
    issuer: metadata.issuer,
    auth_method: authMethod,
    callback: { iss: callback.searchParams.get('iss'), state_ok: true },
    sub: claims.sub,
    id_token_header: idTokenHeader,
    id_token_claims: claims,
    token_type: tokens.token_type,
    scope: tokens.scope,
    userinfo,
    refresh: {
      new_access_token: Boolean(refreshed.access_token) && refreshed.access_token !== tokens.access_token,
      new_refresh_token:
        Boolean(refreshed.refresh_token) && refreshed.refresh_token !== tokens.refresh_token,
      id_token: Boolean(refreshed.id_token),
      id_token_claims: refreshedClaims,
      userinfo_sub: userinfoAfterRefresh.sub,
    },
    steps,
  };
}

// What went wrong, for the caller: the library's error code, the OAuth error (from the
// body, or from a WWW-Authenticate challenge) and the HTTP status.
async function describe(error) {
  const out = { name: error?.name, message: String(error?.message ?? error) };
  if (error?.code) out.code = error.code;
  if (error?.status) out.status = error.status;
  if (error?.error) out.error = error.error;
  if (error?.error_description) out.error_description = error.error_description;
  const cause = error?.cause;
  if (Array.isArray(cause)) {
    out.challenges = cause.map((c) => ({ scheme: c.scheme, parameters: c.parameters }));
  } else if (cause && typeof cause === 'object') {
    out.cause = { name: cause.name, message: cause.message, code: cause.code };
    if (cause.error) out.cause.error = cause.error;
  } else if (cause !== undefined) {
    out.cause = String(cause);
  }
  // A challenge error leaves the response body unread: its OAuth error is there.
  if (!out.error && error?.response && !error.response.bodyUsed) {
    try {
      const body = await error.response.json();
      if (body?.error) out.error = body.error;
      if (body?.error_description) out.error_description = body.error_description;
    } catch {
      // not JSON
    }
  }
  return out;
}

try {
  const result = await run();
  process.stdout.write(`${JSON.stringify(result)}\n`);
} catch (error) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: await describe(error), steps })}\n`);
  process.exitCode = 1;
} finally {
  await close();
}
