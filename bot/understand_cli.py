"""``python -m bot understand``: the understanding layer on the command line.

One message a line on stdin, one JSON object a line on stdout (``--language``); the training
examples as JSON lines (``--dump-training``); a labelled file scored, exiting non-zero under the
accuracy floor (``--eval FILE``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import orjson

from bot.settings import load_settings

DEFAULT_MIN_ACCURACY = 0.85
LANGUAGES = ("es", "en")  # flows.understand.LANGUAGES, not imported here: see `run`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``understand`` command's options."""
    parser.add_argument("--language", choices=LANGUAGES, help="default: BOT_LANGUAGE")
    parser.add_argument(
        "--dump-training", action="store_true", help="write the training examples as JSON lines"
    )
    parser.add_argument("--eval", type=Path, metavar="FILE", help="score a labelled YAML file")
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=DEFAULT_MIN_ACCURACY,
        help=f"--eval exits 1 under this accuracy ({DEFAULT_MIN_ACCURACY})",
    )
    parser.add_argument(
        "--examples",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder with the ISP's own es.yaml/en.yaml examples (repeatable)",
    )


def run(args: argparse.Namespace, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """Carry out ``understand``; returns the exit code."""
    # Imported here, not at the top: scikit-learn must not slow down the other commands.
    from flows.understand import Understanding
    from flows.understand.evaluate import evaluate
    from flows.understand.examples import (
        ExamplesError,
        load_examples,
        load_file,
        training_files,
    )

    bot = load_settings().bot
    languages = (args.language,) if args.language else LANGUAGES
    try:
        if args.dump_training:
            for language in languages:
                for ex in load_examples(training_files(language, args.examples), language):
                    row = {"text": ex.text, "intent": ex.intent, "language": ex.language}
                    stdout.write(orjson.dumps(row).decode() + "\n")
            return 0
        if args.eval is not None:
            labelled = load_file(args.eval)
            file_languages = tuple(dict.fromkeys(ex.language for ex in labelled)) or LANGUAGES
            understanding = Understanding.load(file_languages, tz=bot.tz, extra_dirs=args.examples)
            scored = evaluate(understanding, args.eval)
            stdout.write(scored.render() + "\n")
            if scored.accuracy < args.min_accuracy:
                stdout.write(f"accuracy {scored.accuracy:.1%} is under {args.min_accuracy:.0%}\n")
                return 1
            return 0
        language = args.language or bot.bot_language
        understanding = Understanding.load((language,), tz=bot.tz, extra_dirs=args.examples)
        for line in stdin:
            text = line.rstrip("\r\n")
            result = understanding.understand(text, language).as_json()
            stdout.write(orjson.dumps(result).decode() + "\n")
            stdout.flush()
    except ExamplesError as err:
        print(f"wispbot: {err}", file=sys.stderr)
        return 2
    return 0
