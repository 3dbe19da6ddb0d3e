"""The command line's surface, frozen: `electra --help` and every subcommand's `--help` must equal
tests/cli_help.txt, so that a changed flag, default or help text is a deliberate diff. After a
deliberate change, regenerate the file with `python -m tests.test_cli_help`."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from electra.cli import COMMANDS, build_parser

SNAPSHOT = Path(__file__).with_name("cli_help.txt")


def render_help() -> str:
    """Every --help page at a fixed width (argparse wraps to $COLUMNS)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        pages = []
        for argv in [[]] + [[name] for name in COMMANDS]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                build_parser().parse_args([*argv, "--help"])
            pages.append(f"$ electra {' '.join(argv + ['--help'])}\n{out.getvalue()}")
        return "\n".join(pages)
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def test_every_help_page_matches_the_snapshot():
    assert SNAPSHOT.is_file(), "no snapshot yet: python -m tests.test_cli_help"
    want, got = SNAPSHOT.read_text().splitlines(), render_help().splitlines()
    changed = [f"line {i + 1}: snapshot {a!r} != now {b!r}" for i, (a, b) in enumerate(zip(want, got)) if a != b]
    assert not changed and len(want) == len(got), (
        "the CLI changed (" + (changed[0] if changed else f"{len(want)} vs {len(got)} lines") +
        "); if deliberate, regenerate with python -m tests.test_cli_help")


if __name__ == "__main__":
    SNAPSHOT.write_text(render_help())
    print(f"wrote {SNAPSHOT}")
