"""Who is on one connection: its listener, the client's address and, once known, its
principal. The server makes one per connection; handlers read it from the request."""

from __future__ import annotations

from dataclasses import dataclass

from broker.security.listeners import Listener

ANONYMOUS = "User:ANONYMOUS"


@dataclass(slots=True)
class Session:
    listener: Listener
    client: str  # "host:port"
    principal: str = ANONYMOUS
    authenticated: bool = False  # a SASL listener: the exchange succeeded
    mechanism: str = ""

    @property
    def host(self) -> str:
        return self.client.rsplit(":", 1)[0]
