"""INVITE dialogs (RFC 3261 section 12), UAS side: what the device needs to send BYE and match requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sip import Headers, SipRequest, parse_name_addr


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    local_cseq: int = 0
    remote_cseq: int = 0
    route_set: list[str] = field(default_factory=list)

    @classmethod
    def from_invite(cls, invite: SipRequest, local_tag: str) -> Dialog:
        """The dialog our 2xx to ``invite`` creates (target from Contact, route set from Record-Route)."""
        contact = parse_name_addr(invite.headers.get("Contact") or "")
        frm = invite.from_
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=frm.tag,
            local_uri=invite.to.uri,
            remote_uri=frm.uri,
            remote_target=contact.uri if contact else frm.uri,
            remote_cseq=invite.cseq[0],
            route_set=invite.headers.get_all("Record-Route"),
        )

    def matches(self, request: SipRequest) -> bool:
        return (
            request.call_id == self.call_id
            and request.to.tag == self.local_tag
            and request.from_.tag == self.remote_tag
        )

    def create_request(self, method: str, via: str, *, user_agent: str = "") -> SipRequest:
        self.local_cseq += 1
        headers = Headers()
        headers.add("Via", via)
        for route in self.route_set:
            headers.add("Route", route)
        headers.add("From", f"<{self.local_uri}>;tag={self.local_tag}")
        headers.add("To", f"<{self.remote_uri}>;tag={self.remote_tag}")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_cseq} {method}")
        headers.add("Max-Forwards", "70")
        if user_agent:
            headers.add("User-Agent", user_agent)
        return SipRequest(headers=headers, body=b"", method=method, uri=self.remote_target)
