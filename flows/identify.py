"""Identification (document, or the WhatsApp sender's phone) and verification by holder name.

Nothing of the record is revealed before the name check passes: not the name, the address or
the plan. Three budgets, each a counter in a window of ``lockout_seconds``:

- per chat, wrong names (``chat:``): at ``lockout_attempts`` the chat is locked;
- per chat, look-ups (``lookup:``): every document typed, found or not, and every unknown phone;
  at ``lookup_attempts`` the chat may look up nothing more, so documents cannot be probed;
- per document, wrong names from any chat (``doc:``): at ``lockout_document_attempts`` the
  document is locked for every chat except one that proved itself another way (the sender's own
  phone matched the record), so guessers cannot lock the real holder out cheaply.
"""

from __future__ import annotations

import logging
from typing import Any

from transitions.extensions.asyncio import AsyncEventData

from flows.base import Conversation, Flow, model
from flows.names import name_matches, normalise_document
from flows.route import wanted
from flows.texts import Texts
from flows.types import Option
from integrations.wisphub.client import mask
from integrations.wisphub.errors import WispHubError
from integrations.wisphub.models import Client

log = logging.getLogger(__name__)


DOCUMENT_STATES = ["ask_document", "not_found"]


def _chat_scopes(conv: Conversation) -> tuple[str, str]:
    return f"chat:{conv.key}", f"lookup:{conv.key}"


async def _counts(conv: Conversation) -> tuple[int, int, int]:
    """This chat's wrong names and look-ups, and its document's wrong names: one store call."""
    chat, lookup = _chat_scopes(conv)
    scopes = [chat, lookup] + ([f"doc:{conv.data['doc']}"] if "doc" in conv.data else [])
    counts = await conv.ctx.store.failures_many(scopes)
    return counts[0], counts[1], counts[2] if len(counts) > 2 else 0


def _document_locked(conv: Conversation, doc_count: int) -> bool:
    """Too many wrong names on the document, and this chat has no other proof of identity."""
    settings = conv.ctx.settings
    return doc_count >= settings.lockout_document_attempts and not conv.data.get("proven")


def _tries_left(conv: Conversation, chat: int, doc: int) -> int:
    """Wrong names this chat may still give before a lock: its own budget, or the document's
    when that is nearer (unless the chat proved itself another way)."""
    settings = conv.ctx.settings
    left = settings.lockout_attempts - chat
    if not conv.data.get("proven"):
        left = min(left, settings.lockout_document_attempts - doc)
    return left


async def _count_lookup(conv: Conversation) -> None:
    """One more look-up spent by this chat."""
    window = conv.ctx.settings.lockout_seconds
    await conv.ctx.store.register_failure(_chat_scopes(conv)[1], window)


class IdentifyFlow(Flow):
    """Soy cliente → document (or phone) → holder name → service choice → client menu."""

    name = "identify"
    # After "not found" the customer may simply retype the document, as the reply invites.
    text_states = frozenset({"ask_document", "not_found", "ask_name"})

    def states(self) -> list[dict[str, Any]]:
        """Where identification can wait for the customer."""
        return [
            {"name": "idle"},
            {"name": "ask_document"},
            {"name": "not_found"},
            {"name": "ask_name"},
            {"name": "blocked"},
            {"name": "choose_service"},
        ]

    def transitions(self) -> list[dict[str, Any]]:
        """The identification table; conditions run in order, the first that holds wins."""
        return [
            {
                "trigger": "begin",
                "source": "*",
                "dest": "blocked",
                "conditions": self.chat_locked,
                "after": self.say_locked,
            },
            {
                "trigger": "begin",
                "source": "*",
                "dest": "ask_name",
                "conditions": self.phone_known,
                "after": self.ask_name_by_phone,
            },
            {"trigger": "begin", "source": "*", "dest": "ask_document", "after": self.ask_document},
            {
                "trigger": "retry",
                "source": ["not_found", "blocked"],
                "dest": "ask_document",
                "unless": self.chat_locked,
                "after": self.ask_document,
            },
            {
                "trigger": "text",
                "source": DOCUMENT_STATES,
                "dest": None,
                "unless": self.valid_document,
                "after": self.say_invalid,
            },
            {
                "trigger": "text",
                "source": DOCUMENT_STATES,
                "dest": "blocked",
                "conditions": self.chat_locked,
                "after": self.say_locked,
            },
            {
                "trigger": "text",
                "source": DOCUMENT_STATES,
                "dest": "blocked",
                "conditions": [self.found, self.document_locked],
                "after": self.say_locked,
            },
            {
                "trigger": "text",
                "source": DOCUMENT_STATES,
                "dest": "ask_name",
                "conditions": self.found,
                "after": self.ask_name,
            },
            {
                "trigger": "text",
                "source": DOCUMENT_STATES,
                "dest": "not_found",
                "after": self.say_not_found,
            },
            {
                "trigger": "contact",
                "source": "ask_document",
                "dest": "ask_name",
                "conditions": self.phone_known,
                "after": self.ask_name_by_phone,
            },
            {
                "trigger": "contact",
                "source": "ask_document",
                "dest": None,
                "after": self.ask_document,
            },
            {
                "trigger": "text",
                "source": "ask_name",
                "dest": "blocked",
                "conditions": self.name_locked,
                "after": self.say_locked,
            },
            {
                "trigger": "text",
                "source": "ask_name",
                "dest": "choose_service",
                "conditions": [self.name_ok, self.several],
                "after": self.ask_service,
            },
            {
                "trigger": "text",
                "source": "ask_name",
                "dest": "idle",
                "conditions": self.name_ok,
                "after": self.welcome,
            },
            {
                "trigger": "text",
                "source": "ask_name",
                "dest": "blocked",
                "conditions": self.failure_locks,
                "after": self.say_locked,
            },
            {"trigger": "text", "source": "ask_name", "dest": None, "after": self.say_name_wrong},
            # "atrás" from the name question: type the document again.
            {
                "trigger": "back",
                "source": "ask_name",
                "dest": "ask_document",
                "after": self.ask_document,
            },
            {
                "trigger": "pick",
                "source": "choose_service",
                "dest": "idle",
                "conditions": self.service_picked,
                "after": self.welcome,
            },
        ]

    # -- conditions ------------------------------------------------------------------------
    async def valid_document(self, ev: AsyncEventData) -> bool:
        """The text is a plausible document number; remember it (it replaces a phone match)."""
        conv = model(ev)
        doc = normalise_document(ev.kwargs.get("text", ""))
        if doc is None:
            return False
        conv.data["doc"] = doc
        conv.data.pop("proven", None)
        return True

    async def chat_locked(self, ev: AsyncEventData) -> bool:
        """This chat gave too many wrong names, or spent its look-ups."""
        conv = model(ev)
        settings = conv.ctx.settings
        chat, lookups, _ = await _counts(conv)
        return chat >= settings.lockout_attempts or lookups >= settings.lookup_attempts

    async def name_locked(self, ev: AsyncEventData) -> bool:
        """This chat gave too many wrong names, or its document is locked for it."""
        conv = model(ev)
        chat, _, doc = await _counts(conv)
        return chat >= conv.ctx.settings.lockout_attempts or _document_locked(conv, doc)

    async def document_locked(self, ev: AsyncEventData) -> bool:
        """The document had too many wrong names from any chat."""
        conv = model(ev)
        _, _, doc = await _counts(conv)
        return _document_locked(conv, doc)

    async def found(self, ev: AsyncEventData) -> bool:
        """The document belongs to at least one service (exact matches only).

        Found or not, the look-up is spent: "tell me the name" tells a prober the document is a
        customer's as surely as "not found" tells the opposite. Asked once per message; a
        WispHub failure spends nothing (the customer learnt nothing and may try again).
        """
        conv = model(ev)
        if "found" not in ev.kwargs:
            records = await conv.ctx.wisphub.find_by_document(conv.data["doc"])
            await _count_lookup(conv)
            ev.kwargs["found"] = self._remember(conv, records)
        return bool(ev.kwargs["found"])

    async def phone_known(self, ev: AsyncEventData) -> bool:
        """The sender's own number (WhatsApp ``from``, or a Telegram contact of the sender)
        matches exactly one holder. An unknown number spends a look-up, once per number."""
        conv = model(ev)
        inbound = conv.inbound
        phone = inbound.phone if inbound else None
        if not phone or conv.data.get("phone_missed") == phone:
            return False
        try:
            records = await conv.ctx.wisphub.find_by_phone(phone)
        except WispHubError:
            log.warning(
                "phone look-up failed; asking for the document", extra={"conv": str(conv.key)}
            )
            return False
        if not records:
            conv.data["phone_missed"] = phone
            await _count_lookup(conv)
            return False
        holders = {r.document for r in records if r.document}
        if len(holders) != 1:  # a number shared by several holders: ask the document
            return False
        conv.data["doc"] = holders.pop()
        conv.data["proven"] = "phone"
        return self._remember(conv, records)

    @staticmethod
    def _remember(conv: Conversation, records: list[Client]) -> bool:
        if not records:
            return False
        conv.data["services"] = [r.service_id for r in records]
        conv.data["name_tries"] = 0
        return True

    async def name_ok(self, ev: AsyncEventData) -> bool:
        """The typed name matches the holder's (design.md section 5 rule)."""
        conv = model(ev)
        if "ok_name" in ev.kwargs:
            return bool(ev.kwargs["ok_name"])
        records = await conv.ctx.wisphub.find_by_document(conv.data["doc"])
        holder = next((r for r in records if r.service_id in conv.data["services"]), None)
        ok = holder is not None and name_matches(ev.kwargs.get("text", ""), holder.name)
        ev.kwargs["ok_name"] = ok
        if ok and holder is not None:
            conv.data["first_name"] = holder.first_name
        return ok

    async def several(self, ev: AsyncEventData) -> bool:
        """The holder has more than one service."""
        return len(model(ev).data.get("services", [])) > 1

    async def failure_locks(self, ev: AsyncEventData) -> bool:
        """Count a wrong name for the chat and the document; True when either is locked now."""
        conv = model(ev)
        settings = conv.ctx.settings
        window = settings.lockout_seconds
        chat = await conv.ctx.store.register_failure(_chat_scopes(conv)[0], window)
        doc = await conv.ctx.store.register_failure(f"doc:{conv.data['doc']}", window)
        log.info(
            "verification failed", extra={"conv": str(conv.key), "doc": mask(conv.data["doc"])}
        )
        conv.data["name_tries"] = chat
        ev.kwargs["left"] = _tries_left(conv, chat, doc)
        if doc == settings.lockout_document_attempts:  # once per window: operators may look
            log.warning(
                "document locked after wrong names from any chat",
                extra={"conv": str(conv.key), "doc": mask(conv.data["doc"])},
            )
        return chat >= settings.lockout_attempts or _document_locked(conv, doc)

    async def service_picked(self, ev: AsyncEventData) -> bool:
        """The chosen service is one of the holder's."""
        conv = model(ev)
        try:
            service_id = int(ev.kwargs.get("arg", ""))
        except ValueError:
            return False
        if service_id not in conv.data.get("services", []):
            return False
        conv.data["service_id"] = service_id
        return True

    # -- replies ---------------------------------------------------------------------------
    async def ask_document(self, ev: AsyncEventData) -> None:
        """Ask for the document number."""
        conv = model(ev)
        conv.say(conv.t("ask_document"))

    async def say_invalid(self, ev: AsyncEventData) -> None:
        """Not a document number."""
        conv = model(ev)
        conv.say(conv.t("document_invalid"))

    async def say_not_found(self, ev: AsyncEventData) -> None:
        """No service with that document (the look-up was counted in ``found``)."""
        conv = model(ev)
        conv.data.pop("doc", None)
        text = conv.t("not_found")
        _, lookups, _ = await _counts(conv)
        if conv.ctx.settings.lookup_attempts - lookups == 1:
            text += " " + conv.t("last_lookup", minutes=conv.ctx.settings.lockout_seconds // 60)
        conv.say(text, conv.opts("retry", "agent"))

    async def say_locked(self, ev: AsyncEventData) -> None:
        """Too many failures: locked for a while, an agent offered."""
        conv = model(ev)
        minutes = conv.ctx.settings.lockout_seconds // 60
        conv.end_verification()
        conv.say(conv.t("locked", minutes=minutes), conv.opts("agent", "menu"))

    async def ask_name(self, ev: AsyncEventData) -> None:
        """Ask for the holder's full name."""
        conv = model(ev)
        conv.say(conv.t("ask_name"))

    async def ask_name_by_phone(self, ev: AsyncEventData) -> None:
        """The phone matched: skip the document, ask for the name."""
        conv = model(ev)
        conv.say(conv.t("phone_match") + " " + conv.t("ask_name"))

    async def say_name_wrong(self, ev: AsyncEventData) -> None:
        """Wrong name, attempts left; before the last one, what happens after it."""
        conv = model(ev)
        left = ev.kwargs.get("left", 0)
        text = conv.t("name_wrong", left=left)
        if left == 1:
            text += " " + conv.t("last_try", minutes=conv.ctx.settings.lockout_seconds // 60)
        conv.say(text)

    async def ask_service(self, ev: AsyncEventData) -> None:
        """Several services: choose one by address (the customer is verified now)."""
        conv = model(ev)
        conv.session.verified_until = conv.now + conv.ctx.settings.verified_ttl
        records = await conv.ctx.wisphub.find_by_document(conv.data["doc"])
        mine = [r for r in records if r.service_id in conv.data["services"]]
        options = [Option(f"pick:{r.service_id}", r.address or str(r.service_id)) for r in mine]
        conv.say(conv.t("verified", first_name=conv.data["first_name"]))
        conv.say(conv.t("choose_service", count=len(options)), options)

    async def welcome(self, ev: AsyncEventData) -> None:
        """Verified: into the client menu."""
        conv = model(ev)
        conv.data.setdefault("service_id", conv.data["services"][0])
        conv.data.pop("name_tries", None)
        conv.session.verified_until = conv.now + conv.ctx.settings.verified_ttl
        # The chat's wrong names are forgiven; its look-ups and the document's wrong names are
        # not: a guesser's budget must not refill when the holder (or the guesser) gets in.
        await conv.ctx.store.clear_failures(_chat_scopes(conv)[0])
        if ev.event.name == "text":
            conv.say(conv.t("verified", first_name=conv.data["first_name"]))
        conv.jump(*wanted(conv))  # the need typed before identifying, else the client menu


async def verify_by_agent(conv: Conversation, args: str, notes: Texts) -> str:
    """``/verificar <documento> [servicio]`` in a topic: an agent, having confirmed who the
    customer is by other means, verifies the conversation for that holder, even while the
    document is locked by others' wrong names. Returns the note for the topic."""
    words = args.split()
    doc = normalise_document(words[0]) if words else None
    wanted = words[1] if len(words) > 1 else None
    if doc is None or len(words) > 2 or (wanted is not None and not wanted.isdigit()):
        return notes("agents.verify_usage")
    try:
        records = await conv.ctx.wisphub.find_by_document(doc)
    except WispHubError as err:
        return notes("agents.verify_failed", reason=type(err).__name__)
    if not records:
        return notes("agents.verify_not_found", document=doc)
    chosen = [r for r in records if wanted is None or str(r.service_id) == wanted]
    if len(chosen) != 1:
        services = ", ".join(f"{r.service_id} ({r.address or '-'})" for r in records)
        return notes("agents.verify_choose", document=doc, services=services)
    record = chosen[0]
    conv.end_verification()
    conv.data.update(
        doc=doc,
        services=[r.service_id for r in records],
        service_id=record.service_id,
        first_name=record.first_name,
        proven="agent",
    )
    conv.session.verified_until = conv.now + conv.ctx.settings.verified_ttl
    await conv.ctx.store.clear_failures(_chat_scopes(conv)[0])
    log.info("verified by an agent", extra={"conv": str(conv.key), "doc": mask(doc)})
    return notes("agents.verified_by_agent", name=record.name, service_id=record.service_id)
