"""The command line: ``python -m bot {chat,run,sandbox,simulate,diagram,logkey,understand}`` (also
``wispbot``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bot.settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wispbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("chat", help="talk to the bot in the terminal (sandbox WispHub by default)")
    sub.add_parser("run", help="the service: HTTP server, Telegram and WhatsApp channels")
    sandbox = sub.add_parser("sandbox", help="serve the WispHub-compatible demo API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8099)
    simulate = sub.add_parser("simulate", help="run YAML conversation scenarios")
    simulate.add_argument("paths", nargs="+", metavar="PATH")
    simulate.add_argument(
        "-q", "--quiet", action="store_true", help="print transcripts of failures only"
    )
    diagram = sub.add_parser("diagram", help="print the flows as Mermaid state diagrams")
    diagram.add_argument("flow", nargs="?", default=None)
    logkey = sub.add_parser(
        "logkey", help="print the pseudonym a conversation has in the logs (its `conv` field)"
    )
    logkey.add_argument("channel", choices=["telegram", "whatsapp"])
    logkey.add_argument("chat_id", help="Telegram chat id, or the WhatsApp number (+57 300 ...)")
    understand = sub.add_parser(
        "understand", help="intent and entities of each stdin line, as JSON lines"
    )
    from bot.understand_cli import add_arguments

    add_arguments(understand)
    return parser


def _logkey(channel: str, chat_id: str) -> int:
    """Print a conversation's log pseudonym under this deployment's settings."""
    from bot.logs import log_key, pseudonym

    if channel == "whatsapp":
        chat_id = "".join(c for c in chat_id if c.isdigit())  # wa_id: the number, digits only
    if not chat_id.lstrip("-").isdigit():
        print(f"wispbot: not a {channel} chat id: {chat_id!r}", file=sys.stderr)
        return 2
    print(pseudonym(f"{channel}:{chat_id}", log_key(load_settings().log_secret)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "sandbox":
            from integrations.wisphub.sandbox import serve

            asyncio.run(serve(args.host, args.port))
            return 0
        if args.command == "chat":
            from bot.cli import run_console

            return asyncio.run(run_console())
        if args.command == "run":
            load_settings()  # a bad setting is reported before the heavy imports below
            from bot.cli import run_fast, run_service
            from bot.startup import StartupError

            try:
                return run_fast(run_service())
            except StartupError as err:  # the port taken, Telegram unreachable: one line
                print(f"wispbot: {err}", file=sys.stderr)
                return 1
        if args.command == "simulate":
            from bot.simulate import run_paths

            return asyncio.run(run_paths(args.paths, quiet=args.quiet))
        if args.command == "logkey":
            return _logkey(args.channel, args.chat_id)
        if args.command == "understand":
            from bot.understand_cli import run

            return run(args)
        if args.command == "diagram":
            from flows.diagram import print_diagrams

            return print_diagrams(args.flow)
    except SettingsError as err:
        print(f"wispbot: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
