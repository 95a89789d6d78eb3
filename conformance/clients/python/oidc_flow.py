"""One OpenID Connect login against a live IdP with Authlib.

Discovery, authorization code flow with PKCE S256, state and nonce (Authlib's
``OAuth2Session``), the browser leg with the doctor's card certificate presented on the
login origin only, the code exchange (``fetch_token``), full ID token validation the way
Authlib's own OpenID integration does it (the signature against the JWKS with joserfc,
then ``authlib.oidc.core.CodeIDToken``: iss, aud, exp, iat, nonce, azp, at_hash),
userinfo and refresh.

Prints one JSON object on stdout: {"ok": true, ...results} or {"ok": false, "error": ...}.
Exits non-zero on any failure.

Environment: ISSUER, CA_FILE, CARD_CERT (PEM chain, leaf first), CARD_KEY, CLIENT_ID,
CLIENT_SECRET, REDIRECT_URI; AUTH_METHOD (client_secret_basic, the default, or
client_secret_post); ID_TOKEN_ALG (the registered id_token_signed_response_alg, default
RS256); SCOPE (default "openid profile email hpki offline_access"); TAMPER=id_token alters
the ID token's payload in the token response (the validation must refuse it).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken, UserInfo
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry


class FlowError(Exception):
    """A step of the flow went wrong; ``details`` go into the JSON output."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if not value:
        if default is not None:
            return default
        raise FlowError(f"{name} is not set")
    return value


try:
    ISSUER = env("ISSUER")
    CA_FILE = env("CA_FILE")
    CARD = (env("CARD_CERT"), env("CARD_KEY"))
    CLIENT_ID = env("CLIENT_ID")
    CLIENT_SECRET = env("CLIENT_SECRET")
    REDIRECT_URI = env("REDIRECT_URI")
    AUTH_METHOD = env("AUTH_METHOD", "client_secret_basic")
    ID_TOKEN_ALG = env("ID_TOKEN_ALG", "RS256")
    SCOPE = env("SCOPE", "openid profile email hpki offline_access")
    TAMPER = env("TAMPER", "none")
except FlowError as missing:
    print(json.dumps({"ok": False, "error": {"name": "FlowError", "message": str(missing)}}))
    sys.exit(2)

STEPS: list[str] = []


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def b64json(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def tamper_id_token(id_token: str) -> str:
    header, payload, signature = id_token.split(".")
    claims = b64json(payload)
    claims["hpki_role"] = "Pharmacist"
    claims["sub"] = claims["sub"] + "x"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def record(response: requests.Response, *args, **kwargs) -> None:
    card = " (card)" if origin(response.request.url) != origin(ISSUER) else ""
    path = urlsplit(response.request.url).path
    STEPS.append(f"{response.request.method} {path} {response.status_code}{card}")


# ----- the browser ---------------------------------------------------------------------


def browser_leg(browser: requests.Session, authorization_url: str) -> str:
    """Walks from the authorization URL to the redirect carrying the code.

    The card is presented on the login origin (any origin but the issuer's: the IdP
    names it in its redirect) and nowhere else. Redirects are followed by hand: the
    redirect URI's host does not exist, its URL is captured instead.
    """
    redirect = urlsplit(REDIRECT_URI)

    def at_client(url: str) -> bool:
        target = urlsplit(url)
        return (target.scheme, target.netloc, target.path) == (
            redirect.scheme,
            redirect.netloc,
            redirect.path,
        )

    url = authorization_url
    for _ in range(12):
        card = CARD if origin(url) != origin(ISSUER) else None
        response = browser.get(url, cert=card, allow_redirects=False)
        if response.status_code in (302, 303):
            url = urljoin(url, response.headers["Location"])
            if at_client(url):
                return url
            continue
        if response.status_code == 200 and 'action="/authorize/consent"' in response.text:
            pending = re.search(
                r'<input type="hidden" name="pending" value="([^"]*)"', response.text
            )
            if not pending:
                raise FlowError("consent page without a pending request")
            consent = browser.post(
                urljoin(url, "/authorize/consent"),
                data={"pending": unescape(pending[1]), "lang": "en", "decision": "approve"},
                headers={"Origin": origin(ISSUER)},
                allow_redirects=False,
            )
            if consent.status_code != 303:
                raise FlowError(f"consent answered {consent.status_code}")
            url = urljoin(url, consent.headers["Location"])
            if at_client(url):
                return url
            continue
        reason = re.search(r'data-reason="([^"]*)"', response.text)
        raise FlowError(
            f"browser leg stopped at {urlsplit(url).path} with {response.status_code}",
            reason=reason[1] if reason else None,
        )
    raise FlowError("too many redirects in the browser leg")


# ----- the relying party ---------------------------------------------------------------


def validate_id_token(
    id_token: str,
    jwks: dict,
    access_token: str,
    nonce: str | None,
) -> tuple[dict, dict]:
    """Authlib's ID token validation: the signature (only the registered algorithm),
    then the claims of a code-flow ID token. Returns (header, claims)."""
    token = jwt.decode(
        id_token,
        key=KeySet.import_key_set(jwks),
        registry=JWSRegistry(algorithms=[ID_TOKEN_ALG]),
    )
    claims = CodeIDToken(
        token.claims,
        token.header,
        {
            "iss": {"essential": True, "value": ISSUER},
            "aud": {"essential": True, "value": CLIENT_ID},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            # at_hash is optional in the code flow; this IdP sends it, so insist.
            "at_hash": {"essential": True},
        },
        {"client_id": CLIENT_ID, "nonce": nonce, "access_token": access_token},
    )
    claims.validate(now=int(time.time()), leeway=30)
    return dict(token.header), dict(claims)


def session(s: requests.Session) -> requests.Session:
    """Trusts the test root and only it: without trust_env, REQUESTS_CA_BUNDLE and
    CURL_CA_BUNDLE (which requests lets override a session's verify) and proxy
    variables are ignored."""
    s.trust_env = False
    s.verify = CA_FILE
    s.hooks["response"].append(record)
    return s


def run() -> dict:
    http = session(requests.Session())
    discovery = http.get(f"{ISSUER}/.well-known/openid-configuration")
    discovery.raise_for_status()
    metadata = discovery.json()
    if metadata.get("issuer") != ISSUER:
        raise FlowError("discovery names another issuer", issuer=metadata.get("issuer"))
    if "S256" not in metadata.get("code_challenge_methods_supported", []):
        raise FlowError("the IdP does not announce PKCE S256")
    if AUTH_METHOD not in metadata.get("token_endpoint_auth_methods_supported", []):
        raise FlowError(f"the IdP does not announce {AUTH_METHOD}")

    client = OAuth2Session(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        token_endpoint_auth_method=AUTH_METHOD,
        scope=SCOPE,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint=metadata["token_endpoint"],
    )
    session(client)
    if TAMPER == "id_token":

        def tamper(response: requests.Response) -> requests.Response:
            body = response.json()
            if "id_token" in body:
                body["id_token"] = tamper_id_token(body["id_token"])
                response._content = json.dumps(body).encode()
            return response

        client.register_compliance_hook("access_token_response", tamper)

    code_verifier = generate_token(48)
    nonce = generate_token(24)
    authorization_url, state = client.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=code_verifier, nonce=nonce
    )

    browser = session(requests.Session())
    browser.headers["Accept-Language"] = "en"
    callback = browser_leg(browser, authorization_url)

    # RFC 9207: the authorization response names its issuer.
    params = parse_qs(urlsplit(callback).query)
    if metadata.get("authorization_response_iss_parameter_supported"):
        if params.get("iss") != [ISSUER]:
            raise FlowError("the response names another issuer", iss=params.get("iss"))

    # fetch_token checks state (MismatchingStateException) and sends the code verifier.
    token = client.fetch_token(
        authorization_response=callback, state=state, code_verifier=code_verifier
    )
    if "id_token" not in token:
        raise FlowError("no id_token in the token response")
    jwks_response = http.get(metadata["jwks_uri"])
    jwks_response.raise_for_status()
    jwks = jwks_response.json()
    header, claims = validate_id_token(token["id_token"], jwks, token["access_token"], nonce)

    userinfo_response = client.get(metadata["userinfo_endpoint"])
    userinfo_response.raise_for_status()
    userinfo = UserInfo(userinfo_response.json())
    if userinfo.get("sub") != claims["sub"]:
        raise FlowError("userinfo names another subject", sub=userinfo.get("sub"))

    if "refresh_token" not in token:
        raise FlowError("no refresh_token in the token response")
    refreshed = client.refresh_token(metadata["token_endpoint"], token["refresh_token"])
    refreshed_claims = None
    if "id_token" in refreshed:
        _, refreshed_claims = validate_id_token(
            refreshed["id_token"], jwks, refreshed["access_token"], None
        )
        if refreshed_claims["sub"] != claims["sub"]:
            raise FlowError("the refreshed ID token names another subject")
        if "nonce" in refreshed_claims and refreshed_claims["nonce"] != nonce:
            raise FlowError("the refreshed ID token carries another nonce")
    # The session now holds the refreshed token: userinfo with it.
    after = client.get(metadata["userinfo_endpoint"])
    after.raise_for_status()

    return {
        "ok": True,
        "library": "authlib",
        "issuer": metadata["issuer"],
        "auth_method": AUTH_METHOD,
        "callback": {"iss": params.get("iss", [None])[0], "state_ok": True},
        "sub": claims["sub"],
        "id_token_header": header,
        "id_token_claims": claims,
        "token_type": token.get("token_type"),
        "scope": token.get("scope"),
        "userinfo": dict(userinfo),
        "refresh": {
            "new_access_token": refreshed.get("access_token") not in (None, token["access_token"]),
            "new_refresh_token": refreshed.get("refresh_token")
            not in (None, token["refresh_token"]),
            "id_token": "id_token" in refreshed,
            "id_token_claims": refreshed_claims,
            "userinfo_sub": after.json().get("sub"),
        },
        "steps": STEPS,
    }


def describe(error: BaseException) -> dict:
    out: dict = {"name": type(error).__name__, "message": str(error)}
    # Authlib's OAuthError: the OAuth error code of the response.
    for attr in ("error", "description"):
        value = getattr(error, attr, None)
        if isinstance(value, str):
            out["error_description" if attr == "description" else "error"] = value
    if isinstance(error, requests.HTTPError) and error.response is not None:
        out["status"] = error.response.status_code
        try:
            body = error.response.json()
            out["error"] = body.get("error")
            out["error_description"] = body.get("error_description")
        except ValueError:
            pass
    if isinstance(error, FlowError):
        out.update(error.details)
    return out


def main() -> int:
    try:
        result = run()
    except Exception as error:  # noqa: BLE001 - every failure is reported as JSON
        print(json.dumps({"ok": False, "error": describe(error), "steps": STEPS}))
        return 1
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
