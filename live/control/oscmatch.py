"""OSC 1.0 address patterns (`*`, `?`, `[a-z]`, `[!ab]`, `{foo,bar}`) matched in bounded, linear time.

python-osc turns a pattern into a backtracking regular expression: `/****************/****************x`
then takes about 30 s, holding the GIL, and freezes the live output. Here a pattern is matched part by
part ('/'-separated, as OSC 1.0 says) against a tree of the known addresses, and each part is a small
bit-parallel automaton (one integer operation per character of an address part, however many wildcards
it has). Braces expand to their alternatives. Patterns beyond the limits below are refused (PatternRefused,
counted by the server), so no packet costs more than a bounded amount of work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PATTERN_CHARS = "*?[]{}"
MAX_PATTERN = 256  # characters in a whole address pattern
MAX_PART = 64  # characters in one part
MAX_EXPANSIONS = 16  # alternatives a part's braces expand to
MAX_SETS = 8  # [...] classes in one part


class PatternRefused(ValueError):
    """A pattern over the limits (too long, too many alternatives or classes) or not well-formed."""


def is_pattern(address: str) -> bool:
    return any(ch in address for ch in PATTERN_CHARS)


@dataclass
class _Glob:
    """One brace-free part pattern as a shift-and automaton: state bit i = the first i positions matched."""

    lit: dict[str, int] = field(default_factory=dict)  # char -> the positions (bits) it satisfies
    any: int = 0  # '?' positions
    sets: list[tuple[frozenset[str], list[tuple[str, str]], bool, int]] = field(default_factory=list)
    loop: int = 0  # states a '*' keeps (it sits before that position)
    positions: int = 0
    accepts: dict[str, int] = field(default_factory=dict)  # char -> every position it satisfies (memo)

    def _accept(self, c: str) -> int:
        bits = self.lit.get(c, 0) | self.any
        for chars, ranges, negate, bit in self.sets:
            inside = c in chars or any(lo <= c <= hi for lo, hi in ranges)
            if inside != negate:
                bits |= bit
        self.accepts[c] = bits
        return bits

    def match(self, name: str) -> bool:
        if not self.loop and len(name) != self.positions:
            return False
        if self.loop == 1 and not self.positions:  # '*' alone
            return True
        cur, loop, accepts = 1, self.loop, self.accepts
        for c in name:
            accept = accepts.get(c)
            if accept is None:
                accept = self._accept(c)
            cur = ((cur << 1) & accept) | (cur & loop)
            if not cur:
                return False
        return bool(cur >> self.positions & 1)


def _glob(text: str) -> _Glob:
    g = _Glob()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "*":
            g.loop |= 1 << g.positions
            i += 1
            continue
        bit = 1 << (g.positions + 1)
        if c == "?":
            g.any |= bit
            i += 1
        elif c == "[":
            end = text.find("]", i + 2 if text[i + 1:i + 2] == "!" else i + 1)
            if end < 0:
                raise PatternRefused("unterminated [")
            body = text[i + 1:end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            chars, ranges = set(), []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    ranges.append((body[k], body[k + 2]))
                    k += 3
                else:
                    chars.add(body[k])
                    k += 1
            if len(g.sets) >= MAX_SETS:
                raise PatternRefused("too many [...] classes")
            g.sets.append((frozenset(chars), ranges, negate, bit))
            i = end + 1
        elif c == "]":
            raise PatternRefused("] without [")
        else:
            g.lit[c] = g.lit.get(c, 0) | bit
            i += 1
        g.positions += 1
    return g


def compile_part(part: str) -> list[_Glob]:
    """One part of a pattern -> its brace-free alternatives as automata. Raises PatternRefused."""
    if len(part) > MAX_PART:
        raise PatternRefused(f"a part longer than {MAX_PART} characters")
    texts = [""]
    i = 0
    while i < len(part):
        c = part[i]
        if c == "{":
            end = part.find("}", i)
            if end < 0 or "{" in part[i + 1:end]:
                raise PatternRefused("unbalanced {")
            options = part[i + 1:end].split(",")
            if len(texts) * len(options) > MAX_EXPANSIONS:
                raise PatternRefused(f"more than {MAX_EXPANSIONS} alternatives")
            texts = [t + o for t in texts for o in options]
            i = end + 1
        elif c == "}":
            raise PatternRefused("} without {")
        else:
            j = i
            while j < len(part) and part[j] not in "{}":
                j += 1
            texts = [t + part[i:j] for t in texts]
            i = j
    return [_glob(t) for t in texts]


class AddressTree:
    """Known addresses -> values, looked up by exact address or matched by pattern."""

    def __init__(self, entries: dict[str, object]) -> None:
        self.root: dict[str, list] = {}  # part -> [children, value or None]
        for address, value in entries.items():
            node = [self.root, None]
            for part in address.split("/")[1:]:
                node = node[0].setdefault(part, [{}, None])
            node[1] = value

    def match(self, pattern: str) -> list[object]:
        """The values of every address `pattern` matches (OSC 1.0: same number of parts, each matching).
        Raises PatternRefused for a pattern over the limits or not well-formed."""
        if len(pattern) > MAX_PATTERN:
            raise PatternRefused(f"a pattern longer than {MAX_PATTERN} characters")
        level = [[self.root, None]]
        for part in pattern.split("/")[1:]:
            children = [(name, child) for node in level for name, child in node[0].items()]
            if not children:
                return []
            if is_pattern(part):
                globs = compile_part(part)
                level = [child for name, child in children if any(g.match(name) for g in globs)]
            else:
                level = [child for name, child in children if name == part]
        return [node[1] for node in level if node[1] is not None]
