"""A protocol-level TEST identity platform that issues IMAP access tokens — for tests only.

Microsoft 365's identity platform cannot run here. This small HTTPS server (a `trustme` test CA,
`ca_file`: msal talks https only) answers what an application needs for app-only IMAP access:

- `GET /<tenant>/v2.0/.well-known/openid-configuration`: the OpenID metadata msal reads when it
  is given the authority `<url>/<tenant>`;
- `POST /<tenant>/oauth2/v2.0/token`, grant `client_credentials` (RFC 6749 4.4), client id and
  secret in an HTTP Basic header or in the form (2.3.1): a wrong client is answered 401
  `invalid_client` (as Entra ID answers, AADSTS7000215), a wrong scope 400 `invalid_scope`.

The tokens are the JWTs the test Dovecot checks itself (`Dovecot(oauth=True)`, HS256 with its
key), naming `subject` in `sub`: Dovecot lets a token open only that login (Exchange Online
instead checks which mailboxes the application may open). Knobs for the tests:
`lifetime` (seconds in the JWT's `exp`), `expires_in` (what the answer claims, default the
lifetime: a token that dies earlier than announced), `wrong_key` (tokens Dovecot refuses),
`status` (answer every token request with this HTTP status, e.g. 503, with `retry_after`);
`issued` counts tokens given out (`tokens` holds them), `requests` token requests.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

__all__ = ["OAuthTestServer"]


class OAuthTestServer:
    """One test identity platform on 127.0.0.1 (a free port), signing tokens for one Dovecot."""

    def __init__(self, workdir: Path, dovecot, subject: str, *, tenant: str = "tenant-1",
                 client_id: str = "imap-app-1", client_secret: str = "app-secret-Xq7-9fL",
                 scope: str = "https://outlook.office365.com/.default", lifetime: float = 3600) -> None:
        self.workdir, self.dovecot, self.subject = Path(workdir), dovecot, subject
        self.tenant, self.client_id, self.client_secret, self.scope = tenant, client_id, client_secret, scope
        self.lifetime = lifetime
        self.expires_in: float | None = None
        self.wrong_key = False
        self.status: int | None = None
        self.retry_after = "1"
        self.issued = 0
        self.requests = 0
        self.tokens: list[str] = []
        self.ca_file = self.workdir / "oauth-test-ca.pem"
        self.url = ""
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/{self.tenant}/oauth2/v2.0/token"

    # ----------------------------------------------------------------------- answers
    def _metadata(self) -> dict:
        base = self.authority
        return {"issuer": f"{base}/v2.0", "token_endpoint": self.token_url,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"]}

    def _token(self, form: dict[str, str], authorization: str) -> tuple[int, dict, dict]:
        with self._lock:
            self.requests += 1
        if self.status is not None:
            return self.status, {"error": "temporarily_unavailable"}, {"Retry-After": self.retry_after}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization.startswith("Basic "):
            raw = base64.b64decode(authorization[6:]).decode()
            client_id, _, secret = (unquote(p.replace("+", " ")) for p in raw.partition(":"))
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, {}
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client", "error_description":
                         "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                         "request is the client secret value, not the client secret ID."}, {}
        if self.scope not in form.get("scope", "").split():
            return 400, {"error": "invalid_scope", "error_description": f"AADSTS70011: The provided scope "
                         f"{form.get('scope')!r} is not valid."}, {}
        key = b"not-the-dovecot-key-0123456789ab" if self.wrong_key else None
        token = self.dovecot.token(self.subject, lifetime=self.lifetime, key=key)
        with self._lock:
            self.issued += 1
            self.tokens.append(token)
        expires_in = self.lifetime if self.expires_in is None else self.expires_in
        return 200, {"token_type": "Bearer", "expires_in": int(expires_in), "ext_expires_in": int(expires_in),
                     "access_token": token}, {}

    # ----------------------------------------------------------------------- serving
    def __enter__(self) -> "OAuthTestServer":
        import trustme
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        pem = self.workdir / "oauth-test-server.pem"
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(pem))
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:       # quiet
                pass

            def _answer(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0] == f"/{server.tenant}/v2.0/.well-known/openid-configuration":
                    self._answer(200, server._metadata())
                else:
                    self._answer(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path.split("?")[0] != f"/{server.tenant}/oauth2/v2.0/token":
                    self._answer(404, {"error": "not_found"})
                    return
                self._answer(*server._token(form, self.headers.get("Authorization", "")))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(10)
            self._httpd = None
