"""The OSC server: a hardened UDP listener that writes into the ParamStore.

Safe on a stage network and immune to garbage and floods:
- binds 127.0.0.1 by default; on the LAN only senders on the allow-list are heard (others dropped, counted);
  `--osc-host ::` listens on IPv6 and IPv4 at once, and an IPv4 allow-list matches IPv4 senders that arrive
  as IPv4-mapped addresses (::ffff:a.b.c.d);
- a large receive buffer, drained in batches; within a batch the latest value per address wins, so a
  fader spamming 50k messages a second costs one store write per batch;
- every datagram is checked before python-osc parses it: non-UTF-8 addresses, unknown type tags,
  truncated or missing arguments (a type tag without its bytes), bytes after the last argument, oversized,
  deeply nested or broken bundles are dropped and counted as malformed, never printed, and never supersede
  the value before them;
- bundles are applied at once whatever their timetag (a bundle dated an hour ahead must not stall the server);
- address patterns (`/cue/store/*`) are matched in bounded time by autoencoded.live.control.oscmatch, never
  by python-osc's backtracking matcher; a pattern over its limits is refused and counted;
- the routes are a table derived from the control vocabulary (autoencoded.live.control.params.CONTROLS):
  address -> Route(kind, control, slot), and each kind has one handler in HANDLERS;
- /preset, /model and /status call back into the live command (this module never imports the pipeline);
  the text they carry is escaped before it is printed.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from pythonosc import osc_bundle_builder, osc_message_builder
from pythonosc.osc_message import OscMessage

from autoencoded.errors import UserError
from autoencoded.live.control.oscmatch import AddressTree, PatternRefused, is_pattern
from autoencoded.live.control.params import (
    CONTROLS,
    OSC_COMMANDS,
    ROW,
    ParamStore,
    Spec,
    parse_target,
    target_name,
)
from autoencoded.service import ThreadService
from autoencoded.text import printable

DEFAULT_PORT = 9000
RCVBUF = 4 << 20  # bytes asked for; Linux caps it at net.core.rmem_max
MAX_DATAGRAM = 16384
BATCH = 512  # datagrams drained per wake-up (bounds the memory a flood can hold in user space)
# after a full batch (a flood), rest this long: the server then takes the GIL in short bursts instead of
# contending with the engine thread all the time; the kernel buffer holds what arrives meanwhile
# (handling capacity stays ~80k msg/s, far above any controller)
FLOOD_PAUSE = 0.005
MAX_BUNDLE_DEPTH = 8
MAX_BUNDLE_ITEMS = 64  # messages in one bundle: 64 cost under a millisecond; controllers send a few
# address patterns matched per datagram (a bundle may carry hundreds): each costs up to ~0.3 ms, so a
# datagram costs at most about a millisecond; further patterns are refused and counted (both costs:
# python benchmarks/bench_osc.py)
PATTERNS_PER_DATAGRAM = 3
PATTERN_CACHE = 512  # distinct patterns remembered (TouchOSC-style senders repeat theirs)
STATUS_INTERVAL = 0.02  # at most one /status reply per destination per 20 ms
_TAGS_OK = b"ihfdsbrmtTFN[]"  # the type tags python-osc parses (anything else it logs: refuse first)
# the bytes each fixed-size type tag takes ('s' and 'b' are measured); python-osc fills a float that is missing
# or short with zeros, so the layout is checked here: a `/mix ,f` with no float bytes must not read as 0.0
_TAG_BYTES = {ord(t): n for t, n in (("i", 4), ("f", 4), ("r", 4), ("m", 4), ("h", 8), ("d", 8), ("t", 8),
                                       ("T", 0), ("F", 0), ("N", 0), ("[", 0), ("]", 0))}
_BUNDLE = b"#bundle\x00"

# every received datagram lands in exactly one of: not_allowed, oversize, coalesced (superseded by a later
# value for the same address), not_osc, malformed, parsed; each message of a parsed datagram then in one
# of: applied, bad_args, refused (NaN, bad cue slot, no callback), unknown_address, pattern_refused (a
# pattern not well-formed, over its limits or beyond the datagram's share), callback_errors. processed: datagrams whose handling has finished (received == processed once idle)
COUNTERS = ("received", "processed", "parsed", "applied", "coalesced", "not_allowed", "not_osc", "malformed",
            "oversize", "bad_args", "refused", "unknown_address", "pattern_refused", "callback_errors",
            "status_replies", "signal_feedback")


@dataclass(frozen=True)
class Route:
    """What an address does: `kind` names its handler in HANDLERS; `key` and `slot` the control it plays."""

    kind: str  # "value" | "button" | "row" (a row of buttons, the slot sent as the argument) | "preset" | ...
    key: str = ""
    slot: int | None = None


class _Bad(Exception):
    """A datagram that is not well-formed OSC (counted as malformed)."""


def route_for(key: str, slot: int | None) -> Route:
    """A control (parse_target's answer) -> the route that plays it."""
    control = CONTROLS[key]
    if isinstance(control, Spec):
        return Route("value", key)
    if control.slots and slot is None:
        return Route("row", key)
    return Route("button", key, slot)


def base_routes() -> dict[str, Route]:
    """Every control of the vocabulary at its own address, then /preset, /model and /status."""
    routes: dict[str, Route] = {}
    for key, control in CONTROLS.items():
        if isinstance(control, Spec):
            routes[f"/{key}"] = route_for(key, None)
        elif control.slots:
            head = key[:-len(ROW)]
            routes.setdefault(f"/{head}", route_for(key, None))  # /cue/store 3; /cue/recall stays the value
            for n in range(control.slots):
                routes[f"/{head}/{n}"] = route_for(key, n)
        else:
            routes[f"/{key}"] = route_for(key, None)
    for command in OSC_COMMANDS:
        routes[f"/{command}"] = Route(command)
    return routes


def parse_hostport(text: str, what: str = "--osc-feedback") -> tuple[str, int]:
    """'HOST:PORT' or '[IPv6]:PORT' -> (host, port); UserError (one line, the text escaped) otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ok = sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536 \
        and host.isprintable() and not any(c.isspace() or c in "[]/" for c in host)
    if not ok:
        raise UserError(f"{what} expects HOST:PORT (e.g. 127.0.0.1:9001 or [::1]:9001), got {printable(text)}")
    return host, int(port)


def parse_allow(items) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for item in items or ():
        for part in str(item).split(","):
            if part.strip():
                try:
                    nets.append(ipaddress.ip_network(part.strip(), strict=False))
                except ValueError:
                    raise UserError(f"--osc-allow: {printable(part.strip())} is not an IP address or network "
                                    "(e.g. 192.168.1.20 or 192.168.1.0/24)") from None
    return nets


def sender_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A sender's address as the allow-list sees it: an IPv4 sender reaching an IPv6 socket (::ffff:a.b.c.d)
    is the IPv4 address a.b.c.d. None if it is not an address."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def open_socket(host: str, port: int) -> socket.socket:
    """A UDP socket bound to host:port. An IPv6 host (`::`) hears IPv4 too where the OS allows it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) else "not a host name or address"
        raise UserError(f"--osc-host {printable(host)}: {why}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except (OSError, AttributeError):
                pass  # an IPv6-only socket: IPv4 senders then simply cannot reach it
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = "is in use (another autoencoded live? pick one with --osc-port)" if \
            getattr(exc, "errno", None) in (98, 48, 10048) else f"cannot be opened: {exc.strerror or exc}"
        raise UserError(f"OSC {printable(host)}:{port} {why}") from None
    return sock


def check_message(data: bytes) -> OscMessage:
    """Validate an OSC message datagram before python-osc sees it, then parse it. Raises _Bad."""
    end = data.find(b"\x00")
    if end <= 0:
        raise _Bad("no address terminator")
    try:
        data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("address is not UTF-8") from None
    tag_at = (end + 4) & ~3
    if tag_at < len(data):
        if data[tag_at] != 0x2C:  # ','
            raise _Bad("type tags must start with ','")
        tag_end = data.find(b"\x00", tag_at)
        if tag_end < 0:
            raise _Bad("unterminated type tags")
        tags = data[tag_at + 1:tag_end]
        if tags.translate(None, _TAGS_OK):
            raise _Bad("unknown type tag")
        if arguments_end(data, (tag_end + 4) & ~3, tags) != len(data):
            raise _Bad("the arguments do not fill the datagram exactly")
    try:
        return OscMessage(data)
    except Exception as exc:  # ParseError, UnicodeDecodeError in a string argument, struct errors...
        raise _Bad(type(exc).__name__) from None


def well_formed(data: bytes) -> bool:
    try:
        check_message(data)
    except _Bad:
        return False
    return True


def arguments_end(data: bytes, at: int, tags: bytes) -> int:
    """Where the arguments announced by `tags` end, read from offset `at`: a truncated or missing argument
    ends past len(data), bytes after the last one leave it short (either way the datagram is malformed)."""
    for tag in tags:
        if tag == 0x73:  # 's': NUL-terminated, padded to 4 bytes
            end = data.find(b"\x00", at)
            if end < 0:
                return len(data) + 1
            at = (end + 4) & ~3
        elif tag == 0x62:  # 'b': an int32 size, then the bytes padded to 4
            if at + 4 > len(data):
                return len(data) + 1
            (size,) = struct.unpack_from(">i", data, at)
            if size < 0:
                return len(data) + 1
            at += 4 + ((size + 3) & ~3)
        else:
            at += _TAG_BYTES[tag]
    return at


def bundle_messages(data: bytes) -> list[bytes]:
    """The message datagrams inside a (nested) bundle, in order. Raises _Bad; never recurses deeply."""
    out: list[bytes] = []
    stack = [(data, 16, 1)]  # (bundle bytes, read offset, depth)
    if len(data) < 16:
        raise _Bad("bundle shorter than its header")
    while stack:
        buf, at, depth = stack.pop()
        while at < len(buf):
            if at + 4 > len(buf):
                raise _Bad("truncated bundle element size")
            (size,) = struct.unpack_from(">i", buf, at)
            at += 4
            if size <= 0 or at + size > len(buf):
                raise _Bad("bundle element size out of range")
            element = buf[at:at + size]
            at += size
            if element.startswith(_BUNDLE):
                if depth >= MAX_BUNDLE_DEPTH or len(element) < 16:
                    raise _Bad("bundle nested too deep")
                stack.append((buf, at, depth))
                buf, at, depth = element, 16, depth + 1
                continue
            if not element.startswith(b"/"):
                raise _Bad("bundle element is neither a message nor a bundle")
            out.append(element)
            if len(out) > MAX_BUNDLE_ITEMS:
                raise _Bad("too many messages in a bundle")
    return out


# ---------------------------------------------------------------------------------------------- handlers
# one per route kind: (server, route, args, client) -> None; each checks its argument count and types

def _number(args: list) -> bool:
    """One int, float or OSC true/false (toggles take them)."""
    return len(args) == 1 and isinstance(args[0], (int, float))


def on_value(server: OscServer, route: Route, args: list, client: tuple) -> None:
    if not _number(args):
        server.counters["bad_args"] += 1
    elif server.store.set(route.key, args[0]):
        server.counters["applied"] += 1
    else:
        server.counters["refused"] += 1


def on_button(server: OscServer, route: Route, args: list, client: tuple) -> None:
    """No argument, or a float: TouchOSC sends 1.0 on press and 0.0 on release; one press = one action."""
    if len(args) > 1 or (args and not isinstance(args[0], (int, float))):
        server.counters["bad_args"] += 1
        return
    if args and not args[0] > 0.5:  # a release (0.0) or NaN: nothing to do
        return
    server.store.press(target_name(route.key, route.slot))
    server.counters["applied"] += 1


def on_row(server: OscServer, route: Route, args: list, client: tuple) -> None:
    """A row of buttons addressed by its name, the slot as the argument: /cue/store 3."""
    if not _number(args):
        server.counters["bad_args"] += 1
    elif server.store.press(route.key[:-len(ROW)], args[0]):
        server.counters["applied"] += 1
    else:
        server.counters["refused"] += 1


def _on_command(server: OscServer, route: Route, args: list, callback) -> None:
    if len(args) != 1 or not isinstance(args[0], str) or not args[0].strip() or len(args[0]) > 1024:
        server.counters["bad_args"] += 1
        return
    if callback is None:
        server.counters["refused"] += 1
        return
    text = args[0].strip()
    try:
        callback(text)
        server.counters["applied"] += 1
    except Exception as exc:  # UserError from a bad name, a failed load...
        server.counters["callback_errors"] += 1
        server.say(route.kind, f"osc: /{route.kind} {printable(text)}: {printable(str(exc))}")


def on_preset(server: OscServer, route: Route, args: list, client: tuple) -> None:
    _on_command(server, route, args, server.on_preset)


def on_model(server: OscServer, route: Route, args: list, client: tuple) -> None:
    _on_command(server, route, args, server.on_model)


def on_status(server: OscServer, route: Route, args: list, client: tuple) -> None:
    server.reply_status(client)


HANDLERS: dict[str, Callable[[OscServer, Route, list, tuple], None]] = {
    "value": on_value, "button": on_button, "row": on_row,
    "preset": on_preset, "model": on_model, "status": on_status,
}
PATTERN_KINDS = ("value", "button", "row")  # patterns never reach /preset, /model or /status


class OscServer(ThreadService):
    """Serve OSC into `store` from a background thread: start() / stop().

    port 0 picks a free port (see .port). `allow`: IP networks heard besides loopback; None hears everyone.
    `feedback`: (host, port) that /status replies go to instead of the sender.
    """

    thread_name = "osc-server"
    join_s = 5.0

    def __init__(self, store: ParamStore, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 allow=None, feedback: tuple[str, int] | None = None,
                 on_preset: Callable[[str], object] | None = None,
                 on_model: Callable[[str], object] | None = None,
                 status: Callable[[], dict] | None = None,
                 aliases: dict[str, str] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.store = store
        self.on_preset, self.on_model, self.status_fn = on_preset, on_model, status
        self.log = log or (lambda line: None)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._allow = None if allow is None else list(allow)
        self._allowed_cache: dict[str, bool] = {}
        self._last_reply: dict[tuple, float] = {}
        self._last_log: dict[str, float] = {}
        self._patterns_left = PATTERNS_PER_DATAGRAM
        self.socket = open_socket(host, port)
        self.feedback = None if feedback is None else self._destination(*feedback)
        self.set_aliases(aliases or {})
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:
            pass
        self.rcvbuf = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def _destination(self, host: str, port: int) -> tuple:
        """A feedback HOST:PORT as this socket's family addresses it (an IPv4 host on an IPv6 socket is
        mapped); UserError if it does not resolve."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, socket.gaierror) else "not a host name or address"
            raise UserError(f"--osc-feedback {printable(host)}:{port}: {why}") from None
        family = self.socket.family
        for fam, _, _, _, address in infos:
            if fam == family:
                return address
        if family == socket.AF_INET6:  # an IPv4 destination from a dual-stack socket
            return (f"::ffff:{infos[0][4][0]}", port, 0, 0)
        raise UserError(f"--osc-feedback {printable(host)}: an IPv6 destination needs an IPv6 --osc-host")

    # -- routing ---------------------------------------------------------------------------------
    def set_aliases(self, aliases: dict[str, str]) -> None:
        """Replace the alias table (address -> control target) in one step; safe while serving."""
        routes = base_routes()
        for address, target in aliases.items():
            routes.setdefault(address, route_for(*parse_target(target)))
        self._routes = routes
        self._coalescable = {a.encode() for a, r in routes.items() if r.kind == "value"}
        self._tree = AddressTree({a: r for a, r in routes.items() if r.kind in PATTERN_KINDS})
        self._pattern_cache: dict[str, tuple[Route, ...] | None] = {}

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def aliases_for(self, name: str) -> list[str]:
        return [a for a, r in self._routes.items() if r == Route("value", name) and a != f"/{name}"]

    def allowed(self, host: str) -> bool:
        if self._allow is None:
            return True
        ok = self._allowed_cache.get(host)
        if ok is None:
            ip = sender_ip(host)
            ok = ip is not None and (ip.is_loopback or any(ip in net for net in self._allow))
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[host] = ok
        return ok

    # -- the receive loop ------------------------------------------------------------------------
    def _run(self) -> None:
        self.serve_forever()

    def _stopped(self) -> None:
        self.socket.close()

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        sock = self.socket
        sock.setblocking(False)
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], poll_interval)
            except (OSError, ValueError):
                return  # socket closed under us
            if ready and self.drain(sock) >= BATCH:
                self._stop.wait(FLOOD_PAUSE)

    def drain(self, sock: socket.socket) -> int:
        """Read up to BATCH datagrams, coalesce, handle them; returns how many were read."""
        batch: list[tuple[bytes, tuple]] = []
        c = self.counters
        recvfrom, allowed, size = sock.recvfrom, self.allowed, MAX_DATAGRAM + 1
        read = 0
        for _ in range(BATCH):
            try:
                data, client = recvfrom(size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP port unreachable reported on Windows: not fatal
                continue
            read += 1
            if not allowed(client[0]):
                c["not_allowed"] += 1
            elif len(data) > MAX_DATAGRAM:
                c["oversize"] += 1
            else:
                batch.append((data, client))
        c["received"] += read
        n = c["received"]
        if len(batch) > 1:
            batch = self._coalesce(batch)
        for data, client in batch:
            try:
                self.handle_datagram(data, client)
            except Exception as exc:  # a bug in a handler must not kill the server
                c["callback_errors"] += 1
                self.say("error", f"osc: {type(exc).__name__}: {printable(str(exc))}")
        c["processed"] = n
        return read

    def _coalesce(self, batch):
        """Latest value wins: drop earlier parameter messages superseded by a later one in the batch. Only a
        well-formed message supersedes (a malformed one is dropped when handled and must not take the value
        before it along). Only the latest message of an address is checked here, so a flood of values for one
        fader still costs one extra parse per batch."""
        seen: set[bytes] = set()
        keep = []
        coalescable = self._coalescable
        for data, client in reversed(batch):
            end = data.find(b"\x00") if data[:1] == b"/" else -1
            if end > 0 and data[:end] in coalescable:
                if data[:end] in seen:
                    self.counters["coalesced"] += 1
                    continue
                if well_formed(data):
                    seen.add(data[:end])
            keep.append((data, client))
        keep.reverse()
        return keep

    def handle_datagram(self, data: bytes, client: tuple) -> None:
        c = self.counters
        try:
            if data[:1] == b"/":
                messages = [check_message(data)]
            elif data.startswith(_BUNDLE):
                messages = [check_message(m) for m in bundle_messages(data)]
            else:
                c["not_osc"] += 1
                return
        except _Bad:
            c["malformed"] += 1
            return
        c["parsed"] += 1
        self._patterns_left = PATTERNS_PER_DATAGRAM
        for msg in messages:
            self.dispatch(msg.address, msg.params, client)

    def dispatch(self, address: str, args: list, client: tuple) -> None:
        route = self._routes.get(address)
        if route is not None:
            HANDLERS[route.kind](self, route, args, client)
            return
        matched = self._match(address) if is_pattern(address) else ()
        if matched is None:
            self.counters["pattern_refused"] += 1
            return
        for r in matched:
            HANDLERS[r.kind](self, r, args, client)
        if not matched:
            self.counters["unknown_address"] += 1

    def _match(self, pattern: str) -> tuple[Route, ...] | None:
        """The routes a pattern addresses; None when refused (over its limits, or this datagram's share)."""
        cache = self._pattern_cache
        if pattern in cache:
            return cache[pattern]
        if self._patterns_left <= 0:
            return None
        self._patterns_left -= 1
        try:
            found: tuple[Route, ...] | None = tuple(self._tree.match(pattern))  # type: ignore[arg-type]
        except PatternRefused:  # over its limits, or not well-formed ('/{')
            found = None
        if len(cache) >= PATTERN_CACHE:
            cache.clear()
        cache[pattern] = found
        return found

    # -- /status -----------------------------------------------------------------------------------
    def status_values(self) -> dict[str, object]:
        values: dict[str, object] = {}
        if self.status_fn is not None:
            try:
                values.update(self.status_fn() or {})
            except Exception as exc:
                self.counters["callback_errors"] += 1
                self.say("status", f"osc: /status: {type(exc).__name__}: {printable(str(exc))}")
        return values

    def status_packet(self) -> bytes:
        """A bundle: /status/<key> for each pipeline stat, then every control at its own address
        (and its aliases), so TouchOSC faders follow the current values."""
        bundle = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)

        def add(address: str, value: object) -> None:
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, float):
                value = float(value)
            elif not isinstance(value, (int, str)):
                return
            if isinstance(value, int) and not -2**31 <= value < 2**31:
                value = float(value)
            msg = osc_message_builder.OscMessageBuilder(address)
            msg.add_arg(value)
            bundle.add_content(msg.build())

        for key, value in self.status_values().items():
            add(f"/status/{key}", value)
        for key, value in self.counters.items():
            add(f"/status/osc/{key}", value)
        for name, value in self.store.peek().values().items():
            add(f"/{name}", value)
            for alias in self.aliases_for(name):
                add(alias, value)
        return bundle.build().dgram

    def reply_status(self, client: tuple) -> None:
        dest = self.feedback or client
        key = dest[:2]
        now = time.monotonic()
        if now - self._last_reply.get(key, -1.0) < STATUS_INTERVAL:
            return
        if len(self._last_reply) > 1024:
            self._last_reply.clear()
        self._last_reply[key] = now
        try:
            self.socket.sendto(self.status_packet(), dest)
            self.counters["status_replies"] += 1
        except OSError as exc:
            self.say("status", f"osc: /status reply to {printable(str(dest[0]))}:{dest[1]} failed: "
                               f"{exc.strerror or exc}")

    def send_signals(self, values: dict[str, float]) -> bool:
        """The modulation signals as one bundle to the --osc-feedback destination: audio.bass -> /audio/bass,
        beat.phase -> /beat/phase (floats 0..1). Returns False when there is no destination."""
        if self.feedback is None or not values:
            return False
        bundle = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
        for name, value in values.items():
            m = osc_message_builder.OscMessageBuilder("/" + name.replace(".", "/"))
            m.add_arg(float(value))
            bundle.add_content(m.build())
        self.counters["signal_feedback"] += 1  # before the send: whoever receives it sees it counted
        try:
            self.socket.sendto(bundle.build().dgram, self.feedback)
        except OSError as exc:
            self.counters["signal_feedback"] -= 1
            self.say("signals", f"osc: signal feedback to {printable(str(self.feedback[0]))}:{self.feedback[1]} "
                                f"failed: {exc.strerror or exc}")
            return False
        return True

    def say(self, kind: str, line: str) -> None:
        """Log at most one line per kind per second (a flood of bad /preset names must not flood stderr)."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -10.0) >= 1.0:
            self._last_log[kind] = now
            self.log(line)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)
