"""A real OIDC provider for the access tests: ORY Hydra (`make test` builds it from its Go module,
`scripts/build-hydra.sh`) serving on free loopback ports with an in-memory store, access tokens as
JWTs, and a token hook that puts each client's roles into a `roles` claim, as Entra ID puts app
roles there. It stands in for the stack's own issuer (`services.devtools.identity.Identity`)."""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from services.devtools.identity import APP_ROLES, AUDIENCE
from services.devtools.processes import ManagedProcess, built_binary, free_port, wait_for_http


def hydra_binary() -> str:
    return built_binary("TWINFLEET_HYDRA", "hydra-[0-9]*", "hydra not built yet: run `make test` (it builds it)")


class Hydra:
    """Start, use and stop one Hydra; clients are made per subject with the roles asked for."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.public_port, self.admin_port = free_port(), free_port()
        self.public = f"http://127.0.0.1:{self.public_port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.issuer = f"{self.public}/"
        self.token_url = f"{self.public}/oauth2/token"
        self.roles: dict[str, list[str]] = {}
        self.secrets: dict[str, str] = {}
        self.hook_calls = 0
        self._hook = ThreadingHTTPServer(("127.0.0.1", 0), self._hook_handler())
        self._process: ManagedProcess | None = None

    def _hook_handler(self) -> type[BaseHTTPRequestHandler]:
        hydra = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                client = (body.get("request") or {}).get("client_id") or (body.get("session") or {}).get("client_id")
                hydra.hook_calls += 1
                roles = hydra.roles.get(str(client))
                if roles is None:
                    self.send_response(204)
                    self.end_headers()
                    return
                answer = json.dumps({"session": {"access_token": {"roles": roles}, "id_token": {}}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        return Hook

    def start(self) -> None:
        threading.Thread(target=self._hook.serve_forever, daemon=True).start()
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "hydra.yml"
        hook = f"http://127.0.0.1:{self._hook.server_address[1]}/hook"
        config.write_text(
            json.dumps(
                {
                    "dsn": "memory",
                    "serve": {
                        "public": {"host": "127.0.0.1", "port": self.public_port},
                        "admin": {"host": "127.0.0.1", "port": self.admin_port},
                    },
                    "urls": {
                        "self": {"issuer": self.issuer, "public": self.issuer},
                        "login": f"{self.public}/unused-login",
                        "consent": f"{self.public}/unused-consent",
                    },
                    "secrets": {"system": [secrets.token_hex(24)]},
                    "strategies": {"access_token": "jwt", "jwt": {"scope_claim": "list"}},
                    "ttl": {"access_token": "1h"},
                    "oauth2": {"allowed_top_level_claims": ["roles"], "token_hook": hook},
                    "log": {"level": "warn", "format": "text"},
                    "sqa": {"opt_out": True},
                }
            )
        )
        self._process = ManagedProcess(
            "hydra",
            [hydra_binary(), "serve", "all", "--dev", "--sqa-opt-out", "-c", str(config)],
            self.directory / "hydra.log",
        )
        self._process.start()
        wait_for_http(f"{self.public}/health/ready", 30, self._process.process)
        wait_for_http(f"{self.admin}/health/ready", 30, self._process.process)
        httpx.get(f"{self.public}/.well-known/jwks.json", timeout=30).raise_for_status()  # makes the keys

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        self._hook.shutdown()

    # -- clients and tokens ----------------------------------------------------------------------
    def client(self, client_id: str, roles: list[str], audience: list[str] | None = None) -> str:
        """Register a client-credentials client holding `roles`; returns its secret."""
        if client_id in self.secrets:
            self.roles[client_id] = roles
            return self.secrets[client_id]
        secret = secrets.token_urlsafe(24)
        body = {
            "client_id": client_id,
            "client_secret": secret,
            "grant_types": ["client_credentials"],
            "audience": audience or [AUDIENCE],
            "token_endpoint_auth_method": "client_secret_basic",
        }
        response = httpx.post(f"{self.admin}/admin/clients", json=body, timeout=10)
        response.raise_for_status()
        self.roles[client_id], self.secrets[client_id] = roles, secret
        return secret

    def grant(self, client_id: str, audience: str = AUDIENCE) -> httpx.Response:
        form = {"grant_type": "client_credentials", "audience": audience}
        return httpx.post(self.token_url, data=form, auth=(client_id, self.secrets[client_id]), timeout=10)

    def token(self, subject: str, roles: list[str]) -> str:
        self.client(subject, roles)
        response = self.grant(subject)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def short_lived(self, client_id: str, lifespan: str) -> None:
        body = {"client_credentials_grant_access_token_lifespan": lifespan}
        httpx.put(f"{self.admin}/admin/clients/{client_id}/lifespans", json=body, timeout=10).raise_for_status()

    def rotate(self, kid: str) -> None:
        """A new signing key (the next tokens carry its kid)."""
        body = {"alg": "ES256", "use": "sig", "kid": kid}
        httpx.post(f"{self.admin}/admin/keys/hydra.jwt.access-token", json=body, timeout=30).raise_for_status()

    def app_env(self, app: str) -> dict[str, str]:
        """Trust this issuer (keys found through its discovery document); apps that call others
        get their own client credentials."""
        env = {"TWINFLEET_AUTH_ISSUER": self.issuer}
        if app in APP_ROLES:
            secret = self.client(f"app-{app}", APP_ROLES[app])
            env |= {
                "TWINFLEET_AUTH_CLIENT_ID": f"app-{app}",
                "TWINFLEET_AUTH_CLIENT_SECRET": secret,
                "TWINFLEET_AUTH_TOKEN_URL": self.token_url,
            }
        return env
