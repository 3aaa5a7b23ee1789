"""Text that arrived from outside (the network, a file name in a message) made safe to print on a terminal."""

from __future__ import annotations

import unicodedata

# control (Cc), format (Cf: bidi overrides, zero-width), line/paragraph separators and lone surrogates:
# what can move the cursor, clear the screen, reorder a line or hide text on a terminal
_UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def printable(text: object, limit: int | None = 200) -> str:
    """`text` with every unsafe character escaped as Python writes it (\\x1b, \\u202e), cut to `limit`
    characters (then ending in '...'; None: never cut). Plain text, accents and other scripts pass unchanged."""
    s = str(text)
    limit = len(s) if limit is None else limit
    cut = len(s) > limit
    out = []
    for ch in s[:limit]:
        if unicodedata.category(ch) in _UNSAFE:
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out) + ("..." if cut else "")


def printable_lines(text: object) -> str:
    """For a line about to reach the terminal, whatever it quotes (a plugin's error, a peer's bytes, a file's
    name): every line of `text` made `printable`, uncut, the line breaks kept."""
    return "\n".join(printable(line, None) for line in str(text).split("\n"))
