"""A local fake of the WhatsApp Cloud API (Graph) for tests, and builders of signed webhook calls.

It checks what the real API checks that matters to us (the bearer token, the message shapes and
the limits of interactive messages), records what was sent, serves media, and injects faults:
Graph error codes (``fail(code=130429)``), HTTP statuses (``fail(status=503)``), the closed
24-hour window for one recipient (``close_window(wa_id)``), and a stall (``stall(seconds)``): every
message request arriving meanwhile hangs until the stall ends, then its connection is dropped
unanswered; ``drop(count)`` drops connections at once.

    async with running_fake_graph("TOKEN") as fake:
        settings = WhatsAppSettings(api_url=fake.base_url, access_token="TOKEN", ...)
        ...
        sent = await fake.wait_for_messages("573001112233", 2)

Standalone, for end-to-end runs: ``python tests/fakes/graph_api.py --port 8097 --token TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_VERSION = "v21.0"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE = "15550001234"
WABA_ID = "102290129340398"
# Graph's answers to a bad or missing token, and to a throttled or closed-window message.
_MESSAGES = {
    4: "Application request limit reached",
    80007: "Rate limit issues",
    130429: "Rate limit hit",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131047: "Re-engagement message",
    131009: "Parameter value is not valid",
    131026: "Message Undeliverable",
    100: "Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
}


def sign(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` header Meta sends with a webhook body."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_request(payload: dict[str, Any], app_secret: str) -> tuple[bytes, dict[str, str]]:
    """A webhook body and its headers, signed the way Meta signs them."""
    body = json.dumps(payload).encode()
    return body, {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, app_secret)}


def graph_error(code: int, message: str | None = None, details: str = "") -> dict[str, Any]:
    """A Graph error body."""
    error: dict[str, Any] = {
        "message": message or _MESSAGES.get(code, "Error"),
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEfGh123",
    }
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    return {"error": error}


_ids = itertools.count(1)


def _wamid() -> str:
    return f"wamid.FAKE{next(_ids):08d}"


def webhook(
    messages: list[dict[str, Any]] | None = None,
    *,
    contacts: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    phone_number_id: str = PHONE_NUMBER_ID,
) -> dict[str, Any]:
    """A whole webhook payload around some messages or statuses."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_PHONE, "phone_number_id": phone_number_id},
    }
    if contacts:
        value["contacts"] = contacts
    if messages:
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
    }


def batch(*calls: dict[str, Any]) -> dict[str, Any]:
    """One webhook call carrying the messages and contacts of several (as Meta may batch)."""
    values = [change["value"] for call in calls for change in call["entry"][0]["changes"]]
    return webhook(
        [m for v in values for m in v.get("messages", [])],
        contacts=[c for v in values for c in v.get("contacts", [])],
    )


def from_shape(
    shape: dict[str, Any], *, phone_number_id: str = PHONE_NUMBER_ID, **fields: Any
) -> dict[str, Any]:
    """A webhook call around a stored real shape (``contacts`` and ``messages`` of one change,
    tests/fixtures/whatsapp/): ``{id}`` and ``{now}`` filled in, ``fields`` set on the message."""
    text = json.dumps(shape).replace("{id}", f"{next(_ids):08d}")
    value = json.loads(text.replace("{now}", str(int(time.time()))))
    messages = [{**m, **fields} for m in value.get("messages", [])]
    return webhook(messages, contacts=value.get("contacts"), phone_number_id=phone_number_id)


def as_username(payload: dict[str, Any], username: str = "@cliente") -> dict[str, Any]:
    """The same webhook call as a user who hides the number sends it: the id in
    ``from_user_id`` and ``contacts[].user_id``, no ``from`` and no ``wa_id`` (see
    tests/fixtures/whatsapp/real_shapes.yaml, ``username_text``)."""
    out: dict[str, Any] = json.loads(json.dumps(payload))
    for entry in out.get("entry", []):
        for change in entry.get("changes", []):
            value = change.get("value", {})
            for message in value.get("messages", []):
                message["from_user_id"] = message.pop("from")
            for contact in value.get("contacts", []):
                contact["user_id"] = contact.pop("wa_id")
                contact.setdefault("profile", {})["username"] = username
    return out


def _from(
    wa_id: str, kind: str, content: Any, wamid: str | None, name: str, at: float | None
) -> dict[str, Any]:
    message = {
        "from": wa_id,
        "id": wamid or _wamid(),
        "timestamp": str(int(at if at is not None else time.time())),
        "type": kind,
        kind: content,
    }
    contact = {"profile": {"name": name}, "wa_id": wa_id}
    return webhook([message], contacts=[contact])


def inbound_text(
    wa_id: str, text: str, wamid: str | None = None, *, name: str = "Ana", at: float | None = None
) -> dict[str, Any]:
    """A customer's text message."""
    return _from(wa_id, "text", {"body": text}, wamid, name, at)


def inbound_button(
    wa_id: str, reply_id: str, title: str, wamid: str | None = None, *, name: str = "Ana"
) -> dict[str, Any]:
    """A press on a reply button."""
    content = {"type": "button_reply", "button_reply": {"id": reply_id, "title": title}}
    return _from(wa_id, "interactive", content, wamid, name, None)


def inbound_list(
    wa_id: str,
    reply_id: str,
    title: str,
    description: str = "",
    wamid: str | None = None,
    *,
    name: str = "Ana",
) -> dict[str, Any]:
    """A choice in a list message."""
    reply = {"id": reply_id, "title": title}
    if description:
        reply["description"] = description
    content = {"type": "list_reply", "list_reply": reply}
    return _from(wa_id, "interactive", content, wamid, name, None)


def inbound_media(
    wa_id: str,
    kind: str = "image",
    media_id: str = "1234567890",
    *,
    caption: str = "",
    mime_type: str = "image/jpeg",
    voice: bool = False,
    wamid: str | None = None,
    name: str = "Ana",
) -> dict[str, Any]:
    """An image, audio, video, document or sticker message."""
    content: dict[str, Any] = {"id": media_id, "mime_type": mime_type, "sha256": "abc="}
    if caption:
        content["caption"] = caption
    if kind == "audio":
        content["voice"] = voice
    return _from(wa_id, kind, content, wamid, name, None)


def inbound_location(
    wa_id: str, latitude: float, longitude: float, label: str = "", wamid: str | None = None
) -> dict[str, Any]:
    """A shared location."""
    content: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if label:
        content["name"] = label
    return _from(wa_id, "location", content, wamid, "Ana", None)


def inbound_contact(
    wa_id: str, phone: str, contact_wa_id: str | None = None, wamid: str | None = None
) -> dict[str, Any]:
    """A shared contact card."""
    number: dict[str, Any] = {"phone": phone, "type": "CELL"}
    if contact_wa_id:
        number["wa_id"] = contact_wa_id
    card = {"name": {"formatted_name": "Ana Ruiz", "first_name": "Ana"}, "phones": [number]}
    return _from(wa_id, "contacts", [card], wamid, "Ana", None)


def inbound_template_button(
    wa_id: str, payload: str, text: str, wamid: str | None = None
) -> dict[str, Any]:
    """A press on a template's quick-reply button."""
    return _from(wa_id, "button", {"payload": payload, "text": text}, wamid, "Ana", None)


def status_update(wa_id: str, wamid: str, status: str = "delivered") -> dict[str, Any]:
    """A delivery status of a message the business sent."""
    entry = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": wa_id,
    }
    return webhook(statuses=[entry])


@dataclass
class Fault:
    """One injected failure for the next matching request(s)."""

    code: int | None
    status: int
    count: int
    to: str | None = None
    retry_after: float | None = None
    message: str | None = None


@dataclass
class FakeGraph:
    """State and behaviour of the fake; ``base_url`` is set once it serves."""

    token: str
    phone_number_id: str = PHONE_NUMBER_ID
    base_url: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)  # accepted sends, in order
    reads: list[str] = field(default_factory=list)  # wamids marked as read
    attempts: int = 0  # every POST to /messages, accepted or not
    uploads: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    closed_windows: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    stalled: int = 0  # message requests hung and then dropped by ``stall``
    dropped: int = 0  # message requests still to drop at once (``drop``)
    _stall_until: float = 0.0  # loop time
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    # -- test controls

    def fail(
        self,
        code: int | None = None,
        count: int = 1,
        *,
        status: int | None = None,
        to: str | None = None,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next ``count`` message requests (to ``to``, if given) fail (``message``:
        the Graph error's text instead of Graph's usual one for ``code``)."""
        if code is None and status is None:
            msg = "give a Graph error code, an HTTP status, or both"
            raise ValueError(msg)
        http = status if status is not None else 400
        self.faults.append(Fault(code, http, count, to, retry_after, message))

    def stall(self, seconds: float) -> None:
        """Hang every message request of the next ``seconds``, then drop its connection."""
        self._stall_until = asyncio.get_running_loop().time() + seconds

    def drop(self, count: int = 1) -> None:
        """Drop the connection of the next ``count`` message requests, unanswered."""
        self.dropped += count

    def reset(self) -> None:
        """Forget what was sent, read and uploaded, and every injected fault (between tests)."""
        self.messages.clear()
        self.reads.clear()
        self.attempts = 0
        self.uploads.clear()
        self.media.clear()
        self.closed_windows.clear()
        self.faults.clear()
        self.stalled = 0
        self.dropped = 0
        self._stall_until = 0.0

    def close_window(self, wa_id: str) -> None:
        """Answer 131047 (re-engagement needed) to every message to this recipient."""
        self.closed_windows.add(wa_id)

    def add_media(self, media_id: str, data: bytes, mime: str = "image/jpeg") -> None:
        """Make a customer's media downloadable."""
        self.media[media_id] = (data, mime)

    def messages_to(self, wa_id: str) -> list[dict[str, Any]]:
        """Accepted messages to one recipient (a phone in ``to`` or a BSUID in ``recipient``)."""
        return [m for m in self.messages if _target(m) == wa_id]

    # A bounded wait is the whole point of this helper, hence the timeout parameter.
    async def wait_for_messages(
        self,
        wa_id: str,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        """Wait until ``n`` messages were accepted for ``wa_id``; return them."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages_to(wa_id)) >= n)
        return self.messages_to(wa_id)

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever a message is accepted."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # -- webhook builders bound to this fake's phone number id

    def inbound_text(self, wa_id: str, text: str, wamid: str | None = None) -> dict[str, Any]:
        """A customer's text message."""
        return inbound_text(wa_id, text, wamid)

    def inbound_button(self, wa_id: str, reply_id: str, title: str) -> dict[str, Any]:
        """A press on a reply button."""
        return inbound_button(wa_id, reply_id, title)

    def inbound_list(
        self, wa_id: str, reply_id: str, title: str, description: str = ""
    ) -> dict[str, Any]:
        """A choice in a list message."""
        return inbound_list(wa_id, reply_id, title, description)

    def inbound_media(self, wa_id: str, kind: str = "image", media_id: str = "1") -> dict[str, Any]:
        """A media message."""
        return inbound_media(wa_id, kind, media_id)

    def status_update(self, wa_id: str, wamid: str, status: str = "delivered") -> dict[str, Any]:
        """A delivery status."""
        return status_update(wa_id, wamid, status)

    @staticmethod
    def sign(body: bytes, app_secret: str) -> str:
        """The signature header for a body."""
        return sign(body, app_secret)

    # -- the HTTP side

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    def _fault_for(self, to: str) -> Fault | None:
        for fault in self.faults:
            if fault.to is None or fault.to == to:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _messages(self, request: web.Request) -> web.Response:
        hang = self._stall_until - asyncio.get_running_loop().time()
        if hang > 0 or self.dropped > 0:
            if hang > 0:
                self.stalled += 1
                await asyncio.sleep(hang)
            else:
                self.dropped -= 1
            if request.transport is not None:  # the client may have given up already
                request.transport.close()  # a dropped connection: no answer at all
            return web.Response(status=503)
        if not self._authorized(request):
            return web.json_response(graph_error(190), status=401)
        if request.match_info["phone_id"] != self.phone_number_id:
            return web.json_response(graph_error(100, "Unsupported post request"), status=400)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response(graph_error(100, "Invalid JSON"), status=400)
        if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
            return web.json_response(graph_error(100, "messaging_product is required"), status=400)
        if body.get("status") == "read":
            async with self._changed:
                self.reads.append(str(body.get("message_id")))
                self._changed.notify_all()
            return web.json_response({"success": True})
        self.attempts += 1
        to = _target(body)
        fault = self._fault_for(to)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
            if fault.code is None:
                return web.Response(status=fault.status, text="fault", headers=headers)
            error = graph_error(fault.code, fault.message)
            return web.json_response(error, status=fault.status, headers=headers)
        if to in self.closed_windows:
            details = "Message failed to send because more than 24 hours have passed"
            return web.json_response(graph_error(131047, details=details), status=400)
        problem = validate_message(body)
        if problem:
            return web.json_response(graph_error(131009, details=problem), status=400)
        wamid = _wamid()
        async with self._changed:
            self.messages.append({**body, "id": wamid})
            self._changed.notify_all()
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [_contact(body)],
                "messages": [{"id": wamid}],
            }
        )

    async def _media_info(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response(graph_error(190), status=401)
        media_id = request.match_info["media_id"]
        stored = self.media.get(media_id) or self.uploads.get(media_id)
        if stored is None:
            return web.json_response(graph_error(100, "Unknown media"), status=404)
        data, mime = stored
        root = self.base_url.rsplit("/", 1)[0]
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{root}/lookaside/{media_id}",
                "mime_type": mime,
                "sha256": hashlib.sha256(data).hexdigest(),
                "file_size": len(data),
                "id": media_id,
            }
        )

    async def _download(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        stored = self.media.get(request.match_info["media_id"])
        if stored is None:
            return web.Response(status=404)
        data, mime = stored
        return web.Response(body=data, content_type=mime)

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response(graph_error(190), status=401)
        form = await request.post()
        upload = form.get("file")
        if form.get("messaging_product") != "whatsapp" or not isinstance(upload, web.FileField):
            return web.json_response(graph_error(100, "file and messaging_product"), status=400)
        media_id = f"{next(_ids)}"
        self.uploads[media_id] = (upload.file.read(), str(form.get("type", "")))
        return web.json_response({"id": media_id})

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_post(f"/{API_VERSION}/{{phone_id}}/messages", self._messages)
        app.router.add_post(f"/{API_VERSION}/{{phone_id}}/media", self._upload)
        app.router.add_get(f"/{API_VERSION}/{{media_id}}", self._media_info)
        app.router.add_get("/lookaside/{media_id}", self._download)
        return app


def _target(body: dict[str, Any]) -> str:
    """Who a message is for: ``to`` (a phone) wins over ``recipient`` (a BSUID), as in Graph."""
    return str(body.get("to") or body.get("recipient") or "")


def _contact(body: dict[str, Any]) -> dict[str, str]:
    """The ``contacts`` item of Graph's answer to a send."""
    if body.get("to"):
        return {"input": str(body["to"]), "wa_id": str(body["to"])}
    return {"input": str(body.get("recipient")), "user_id": str(body.get("recipient"))}


def _limit(errors: list[str], name: str, text: object, limit: int) -> None:
    if not isinstance(text, str) or not text:
        errors.append(f"{name} is required")
    elif len(text) > limit:
        errors.append(f"{name} is longer than {limit} characters")


def validate_message(body: dict[str, Any]) -> str:
    """What the Cloud API would reject in a message (empty when it is acceptable)."""
    errors: list[str] = []
    kind = body.get("type")
    if not body.get("to") and not body.get("recipient"):
        errors.append("to or recipient is required")
    if body.get("to") and not str(body["to"]).lstrip("+").isdigit():
        errors.append("to takes a phone number; a business-scoped user id goes in recipient")
    content = body.get(kind) if isinstance(kind, str) else None
    if not isinstance(content, dict):
        return f"the {kind} object is missing"
    if kind == "text":
        _limit(errors, "text.body", content.get("body"), 4096)
    elif kind == "interactive":
        _limit(errors, "body.text", (content.get("body") or {}).get("text"), 1024)
        action = content.get("action") or {}
        if content.get("type") == "button":
            buttons = action.get("buttons") or []
            if not 1 <= len(buttons) <= 3:
                errors.append("1 to 3 buttons")
            titles = [b["reply"]["title"] for b in buttons]
            ids = [b["reply"]["id"] for b in buttons]
            for title in titles:
                _limit(errors, "button title", title, 20)
            if len(set(titles)) != len(titles) or len(set(ids)) != len(ids):
                errors.append("button titles and ids must be unique")
        elif content.get("type") == "list":
            _limit(errors, "action.button", action.get("button"), 20)
            rows = [r for s in action.get("sections") or [] for r in s.get("rows") or []]
            if not 1 <= len(rows) <= 10:
                errors.append("1 to 10 rows")
            for row in rows:
                _limit(errors, "row title", row.get("title"), 24)
                if "description" in row:
                    _limit(errors, "row description", row["description"], 72)
            if len({r.get("id") for r in rows}) != len(rows):
                errors.append("row ids must be unique")
        else:
            errors.append("unknown interactive type")
    elif kind in ("image", "audio", "video", "document", "sticker"):
        if not (content.get("id") or content.get("link")):
            errors.append("media id or link is required")
        if "caption" in content and kind in ("audio", "sticker"):
            errors.append(f"{kind} messages take no caption")
    elif kind == "template":
        # An approved template by name and language code; its body parameters are text.
        _limit(errors, "template.name", content.get("name"), 512)
        _limit(errors, "template.language.code", (content.get("language") or {}).get("code"), 15)
        for component in content.get("components") or []:
            for parameter in component.get("parameters") or []:
                if parameter.get("type") != "text" or not isinstance(parameter.get("text"), str):
                    errors.append("template parameters must be text")
    else:
        errors.append(f"unsupported type {kind}")
    return "; ".join(errors)


@contextlib.asynccontextmanager
async def running_fake_graph(
    token: str, *, phone_number_id: str = PHONE_NUMBER_ID, port: int = 0
) -> AsyncIterator[FakeGraph]:
    """Serve a fake Graph API on 127.0.0.1 (a free port unless given) while the block runs."""
    fake = FakeGraph(token, phone_number_id)
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    actual = runner.addresses[0][1]
    fake.base_url = f"http://127.0.0.1:{actual}/{API_VERSION}"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def _serve(token: str, port: int, phone_number_id: str) -> None:
    async with running_fake_graph(token, phone_number_id=phone_number_id, port=port) as fake:
        print(f"fake Graph API at {fake.base_url} (phone number id {phone_number_id})", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """Run the fake standalone until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8097)
    parser.add_argument("--token", required=True)
    parser.add_argument("--phone-number-id", default=PHONE_NUMBER_ID)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.token, args.port, args.phone_number_id))


if __name__ == "__main__":
    main()
