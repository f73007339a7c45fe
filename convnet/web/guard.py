"""Who may talk to the explorer: only this machine's own pages, by the names it answers to.

A server on 127.0.0.1 is reachable by any page the user's browser opens, in two ways:

- DNS rebinding: a page at evil.example whose name then resolves to 127.0.0.1 talks to the
  explorer as its own origin. Its requests carry `Host: evil.example:PORT`, so every request
  whose Host is not one of the allowed names (127.0.0.1, localhost, [::1], plus those given
  with --allow-remote/--allowed-host) is refused.
- Cross-site requests: a page elsewhere can send a form POST (or an image load) here without
  reading the answer. A request that changes state (any method but GET/HEAD/OPTIONS) must come
  from the explorer's own page: an `Origin` other than this server's, or a `Sec-Fetch-Site`
  other than same-origin, is refused, and the request must carry the per-server token the page
  received in its HTML (`X-Convnet-Token`), which a custom header also keeps from simple forms.
  API reads (GET /api/...) refuse `Sec-Fetch-Site: cross-site/same-site` too: another site's
  page cannot make the server compute saliency maps for it.

Refusals are JSON {"detail": ...} with status 403 (421 for a wrong Host), before the request
reaches the application.
"""

from __future__ import annotations

import hmac
import json
import secrets

from starlette.datastructures import Headers

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "X-Convnet-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ANY_HOST = "*"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def host_name(host: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1', 'LocalHost' -> 'localhost'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: refuses requests for other host names and cross-site writes."""

    def __init__(self, app, *, token: str, allowed_hosts=None):
        self.app = app
        self.token = token
        names = [*LOOPBACK_NAMES, *(allowed_hosts or ())]
        self.any_host = ANY_HOST in names
        self.allowed = {host_name(name) for name in names if name != ANY_HOST}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        status, message = refusal
        body = json.dumps({"detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed:
            return 421, (f"this explorer answers only to {', '.join(sorted(self.allowed))}, "
                         f"not to Host {host or '(none)'!r}; open it as http://127.0.0.1:PORT/ "
                         f"(or start it with --allowed-host NAME)")
        method = scope["method"]
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none") and (
                method not in SAFE_METHODS or scope["path"].startswith("/api/")):
            return 403, (f"a request from another site ({site}) is refused: the explorer "
                         f"answers its own page only")
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        scheme = scope.get("scheme", "http")
        if origin is not None and origin.lower() != f"{scheme}://{host}".lower():
            return 403, (f"a request from {origin} is refused: changes are accepted only from "
                         f"the explorer's own page ({scheme}://{host})")
        sent = headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.token.encode()):
            return 403, (f"missing or wrong {TOKEN_HEADER} header: changes are accepted only "
                         f"from the explorer's own page, which sends the token it was given")
        return None
