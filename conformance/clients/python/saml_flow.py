"""One SAML 2.0 SP-initiated login against a live IdP with pysaml2 as the service provider.

MODE=metadata prints the SP's metadata (pysaml2's own generator) for the IdP to register.
MODE=login (the default) loads the IdP's metadata from its URL (TLS verified against the
test root), sends a signed AuthnRequest by HTTP-Redirect, walks the browser leg with the
doctor's card presented on the login origin only (approving consent when asked), takes the
auto-POSTed Response and lets pysaml2 validate it: both signatures against the metadata's
certificate, Destination, Audience, Recipient, InResponseTo, NotBefore/NotOnOrAfter.

Prints one JSON object on stdout: {"ok": true, ...results} or {"ok": false, "error": ...}.
Exits non-zero on any failure.

Environment: MODE; SP_ENTITY_ID, ACS_URL, SP_KEY, SP_CERT (PEM, the SP's signing key);
IDP_METADATA_URL, CA_FILE, CARD_CERT, CARD_KEY (login); BINDING (redirect, the default, or
post); TAMPER=attribute alters a signed attribute value in the Response before pysaml2
sees it (the validation must refuse it).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import tempfile
from html import unescape
from urllib.parse import urljoin, urlsplit

import requests
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256


class FlowError(Exception):
    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


STEPS: list[str] = []


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if not value:
        if default is not None:
            return default
        raise FlowError(f"{name} is not set")
    return value


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def slo_url() -> str:
    acs = urlsplit(env("ACS_URL"))
    return f"{acs.scheme}://{acs.netloc}/slo"


def sp_config(idp_metadata_file: str | None) -> SPConfig:
    config = {
        "entityid": env("SP_ENTITY_ID"),
        "key_file": env("SP_KEY"),
        "cert_file": env("SP_CERT"),
        "xmlsec_binary": shutil.which("xmlsec1"),
        "allow_unknown_attributes": True,
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(env("ACS_URL"), BINDING_HTTP_POST)],
                    "single_logout_service": [(slo_url(), BINDING_HTTP_REDIRECT)],
                },
                "authn_requests_signed": True,
                "logout_requests_signed": True,
                "logout_responses_signed": True,
                "want_response_signed": True,
                "want_assertions_signed": True,
                "allow_unsolicited": False,
                "name_id_format": NAMEID_FORMAT_PERSISTENT,
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
                "requested_attributes": [
                    {"name": "urn:oid:1.2.392.100495.1.6.1.1", "required": True},
                    {"name": "urn:oid:2.5.4.4", "required": False},
                    {"name": "urn:oid:2.5.4.42", "required": False},
                ],
            }
        },
    }
    if idp_metadata_file:
        config["metadata"] = {"local": [idp_metadata_file]}
    sp = SPConfig()
    sp.load(config)
    return sp


def record(response: requests.Response, *args, **kwargs) -> None:
    card = " (card)" if response.request.url and "/login/hpki" in response.request.url else ""
    path = urlsplit(response.request.url).path
    STEPS.append(f"{response.request.method} {path} {response.status_code}{card}")


def browser_leg(browser: requests.Session, public: str, first: requests.Response) -> dict:
    """From the IdP's first answer to the auto-POST form for the ACS. The card goes to the
    login origin (any origin but the public one) and nowhere else."""
    response = first
    for _ in range(12):
        url = response.url
        if response.status_code in (302, 303):
            url = urljoin(url, response.headers["Location"])
            card = CARD if origin(url) != public else None
            response = browser.get(url, cert=card, allow_redirects=False)
            continue
        text = response.text
        if response.status_code == 200 and 'action="/saml/sso/consent"' in text:
            pending = re.search(r'name="pending" value="([^"]*)"', text)
            if not pending:
                raise FlowError("consent page without a pending request")
            response = browser.post(
                urljoin(url, "/saml/sso/consent"),
                data={"pending": unescape(pending[1]), "lang": "en", "decision": "approve"},
                headers={"Origin": public},
                allow_redirects=False,
            )
            continue
        if response.status_code == 200 and 'name="SAMLResponse"' in text:
            action = re.search(r'<form method="post" action="([^"]*)"', text)
            message = re.search(r'name="SAMLResponse" value="([^"]*)"', text)
            relay = re.search(r'name="RelayState" value="([^"]*)"', text)
            if not action or not message:
                raise FlowError("auto-POST page without a form")
            return {
                "action": unescape(action[1]),
                "SAMLResponse": unescape(message[1]),
                "RelayState": unescape(relay[1]) if relay else None,
                "csp": response.headers.get("Content-Security-Policy", ""),
            }
        reason = re.search(r'data-reason="([^"]*)"', text)
        raise FlowError(
            f"browser leg stopped at {urlsplit(url).path} with {response.status_code}",
            reason=reason[1] if reason else None,
        )
    raise FlowError("too many steps in the browser leg")


def tamper(saml_response: str) -> str:
    xml = base64.b64decode(saml_response).decode()
    forged = xml.replace("Medical Doctor", "Pharmacist", 1)
    if forged == xml:
        raise FlowError("nothing to tamper with")
    return base64.b64encode(forged.encode()).decode()


def run_login() -> dict:
    public = origin(env("IDP_METADATA_URL"))
    browser = requests.Session()
    browser.trust_env = False
    browser.verify = env("CA_FILE")
    browser.hooks["response"].append(record)
    metadata = browser.get(env("IDP_METADATA_URL"))
    if metadata.status_code != 200:
        raise FlowError(f"metadata: HTTP {metadata.status_code}")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
        f.write(metadata.text)
        metadata_file = f.name
    client = Saml2Client(config=sp_config(metadata_file))
    idp_entity_id = next(iter(client.metadata.identity_providers()))
    binding = BINDING_HTTP_POST if env("BINDING", "redirect") == "post" else BINDING_HTTP_REDIRECT
    request_id, info = client.prepare_for_authenticate(
        entityid=idp_entity_id,
        relay_state="relay-123",
        binding=binding,
        sigalg=SIG_RSA_SHA256,
        digest_alg=DIGEST_SHA256,
        sign=True,
    )
    if binding == BINDING_HTTP_REDIRECT:
        location = dict(info["headers"])["Location"]
        first = browser.get(location, allow_redirects=False)
    else:
        action = re.search(r'action="([^"]*)"', info["data"])
        fields = dict(re.findall(r'name="([^"]*)" value="([^"]*)"', info["data"]))
        if not action:
            raise FlowError("pysaml2 produced no POST form")
        first = browser.post(
            unescape(action[1]),
            data={k: unescape(v) for k, v in fields.items()},
            allow_redirects=False,
        )
    form = browser_leg(browser, public, first)
    message = form["SAMLResponse"]
    if env("TAMPER", "none") == "attribute":
        message = tamper(message)
    response = client.parse_authn_request_response(
        message, BINDING_HTTP_POST, outstanding={request_id: "/"}
    )
    if response is None:
        raise FlowError("pysaml2 returned no response")
    assertion = response.assertion
    statement = assertion.authn_statement[0]
    logout = run_logout(client, browser, public, response.name_id) if env("LOGOUT", "no") == "yes" else None
    return {
        "logout": logout,
        "library": "pysaml2",
        "idp_entity_id": idp_entity_id,
        "request_id": request_id,
        "acs": form["action"],
        "relay_state": form["RelayState"],
        "csp": form["csp"],
        "in_response_to": response.in_response_to,
        "name_id": response.name_id.text,
        "name_id_format": response.name_id.format,
        "session_index": statement.session_index,
        "authn_context": statement.authn_context.authn_context_class_ref.text,
        "ava": response.ava,
        "response_xml": base64.b64decode(form["SAMLResponse"]).decode(),
        "steps": STEPS,
    }


def run_logout(client: Saml2Client, browser: requests.Session, public: str, name_id) -> dict:
    """SP-initiated Single Logout over HTTP-Redirect: pysaml2 signs the LogoutRequest,
    the browser carries it to the IdP and the signed LogoutResponse back, pysaml2
    validates that; then the IdP session must be gone."""
    before = browser.get(f"{public}/api/session").status_code
    requests_by_idp = client.global_logout(name_id, reason="urn:oasis:names:tc:SAML:2.0:logout:user", sign=True, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)
    ((idp, (binding, http_args)),) = requests_by_idp.items()
    location = dict(http_args["headers"])["Location"]
    answer = browser.get(location, allow_redirects=False)
    if answer.status_code != 303:
        reason = re.search(r'data-reason="([^"]*)"', answer.text)
        raise FlowError(f"logout answered {answer.status_code}", reason=reason[1] if reason else None)
    back = answer.headers["Location"]
    if not back.startswith(slo_url()):
        raise FlowError(f"logout response sent to {back}")
    query = dict(p.split("=", 1) for p in urlsplit(back).query.split("&"))
    from urllib.parse import unquote

    logout_response = client.parse_logout_request_response(unquote(query["SAMLResponse"]), BINDING_HTTP_REDIRECT)
    if logout_response is None:
        raise FlowError("pysaml2 returned no logout response")
    after = browser.get(f"{public}/api/session").status_code
    return {
        "status": logout_response.response.status.status_code.value,
        "in_response_to": logout_response.in_response_to,
        "session_before": before,
        "session_after": after,
        "signed_query": "Signature=" in back,
    }


def main() -> int:
    try:
        if env("MODE", "login") == "metadata":
            print(json.dumps({"ok": True, "metadata": create_metadata_string(None, sp_config(None)).decode()}))
            return 0
        result = run_login()
        print(json.dumps({"ok": True, **result}, ensure_ascii=False))
        return 0
    except Exception as error:  # every failure becomes JSON for the test to assert on
        details = getattr(error, "details", {})
        print(
            json.dumps(
                {
                    "ok": False,
                    "error": {"name": type(error).__name__, "message": str(error), **details},
                    "steps": STEPS,
                },
                ensure_ascii=False,
            )
        )
        return 1


CARD = (os.environ.get("CARD_CERT", ""), os.environ.get("CARD_KEY", ""))

if __name__ == "__main__":
    sys.exit(main())
