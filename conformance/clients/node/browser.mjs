// The browser of the conformance clients: a minimal cookie jar and one request at a time,
// redirects not followed, with the doctor's card presented on the IdP's login origin
// (any origin but the public one: the IdP names it in a redirect) and nowhere else.
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';

// Host-only cookies keyed by host name (cookies ignore the port, so the IdP's two origins
// on one host share them, as in a browser), Secure ones sent over https only, Max-Age=0
// deletes.
function cookieJar() {
  const jar = new Map();
  return {
    store(url, setCookie) {
      if (!setCookie) return;
      for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
        const [pair, ...attributes] = line.split(';').map((s) => s.trim());
        const eq = pair.indexOf('=');
        if (eq <= 0) continue;
        const name = pair.slice(0, eq);
        const value = pair.slice(eq + 1);
        const attrs = Object.fromEntries(
          attributes.map((a) => {
            const i = a.indexOf('=');
            return i < 0 ? [a.toLowerCase(), true] : [a.slice(0, i).toLowerCase(), a.slice(i + 1)];
          }),
        );
        const cookies = jar.get(url.hostname) ?? new Map();
        if (attrs['max-age'] !== undefined && Number(attrs['max-age']) <= 0) {
          cookies.delete(name);
        } else {
          cookies.set(name, { value, secure: attrs.secure === true, path: attrs.path ?? '/' });
        }
        jar.set(url.hostname, cookies);
      }
    },
    header(url) {
      const cookies = jar.get(url.hostname);
      if (!cookies) return undefined;
      const pairs = [];
      for (const [name, c] of cookies) {
        if (c.secure && url.protocol !== 'https:') continue;
        if (!url.pathname.startsWith(c.path)) continue;
        pairs.push(`${name}=${c.value}`);
      }
      return pairs.length ? pairs.join('; ') : undefined;
    },
  };
}

// A browser for the IdP at `publicOrigin`, trusting only the test root in `caFile`, with
// the card (`cardCert` chain and `cardKey`, PEM files). Every request is recorded in
// `steps` as "METHOD /path STATUS" (+ " (card)").
export function makeBrowser({ publicOrigin, caFile, cardCert, cardKey, steps }) {
  const ca = readFileSync(caFile);
  // The IdP's server certificates chain to the test root: trust it (and only it).
  const publicAgent = new Agent({ connect: { ca } });
  // The login origin demands the card: present it there and nowhere else.
  const cardAgent = new Agent({
    connect: { ca, cert: readFileSync(cardCert), key: readFileSync(cardKey) },
  });
  const jar = cookieJar();

  async function browse(url, { method = 'GET', form } = {}) {
    const headers = { accept: 'text/html', 'accept-language': 'en' };
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    let body;
    if (form) {
      body = new URLSearchParams(form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers.origin = publicOrigin;
    }
    const onLogin = url.origin !== publicOrigin;
    const response = await request(url, {
      method,
      headers,
      body,
      dispatcher: onLogin ? cardAgent : publicAgent,
    });
    jar.store(url, response.headers['set-cookie']);
    const text = await response.body.text();
    steps.push(`${method} ${url.pathname} ${response.statusCode}${onLogin ? ' (card)' : ''}`);
    const location = response.headers.location;
    return {
      status: response.statusCode,
      headers: response.headers,
      location: location ? new URL(location, url) : undefined,
      text,
    };
  }

  return {
    browse,
    publicAgent,
    close: () => Promise.allSettled([publicAgent.close(), cardAgent.close()]),
  };
}
