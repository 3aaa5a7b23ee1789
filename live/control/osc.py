"""The OSC server: a hardened python-osc BlockingOSCUDPServer that writes into the ParamStore.

Safe on a stage network and immune to garbage and floods:
- binds 127.0.0.1 by default; on the LAN only senders on the allow-list are heard (others dropped, counted);
- a large receive buffer, drained in batches; within a batch the latest value per address wins, so a
  fader spamming 50k messages a second costs one store write per batch;
- every datagram is checked before python-osc parses it: non-UTF-8 addresses, unknown type tags,
  truncated arguments, oversized, deeply nested or broken bundles are dropped and counted, never printed;
- bundles are applied at once whatever their timetag (the Dispatcher's strict_timing=False semantics:
  a bundle dated an hour ahead must not stall the server);
- every handler checks its argument count and types; values are clamped by the store (NaN refused);
- /preset, /model and /status call back into the live command (this module never imports the pipeline).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pythonosc import osc_bundle_builder, osc_message_builder
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message import OscMessage
from pythonosc.osc_server import BlockingOSCUDPServer

from autoencoded.errors import UserError
from autoencoded.live.control.params import N_CUES, SPECS, ParamStore, parse_target

DEFAULT_PORT = 9000
RCVBUF = 4 << 20  # bytes asked for; Linux caps it at net.core.rmem_max
MAX_DATAGRAM = 16384
BATCH = 512  # datagrams drained per wake-up (bounds the memory a flood can hold in user space)
# after a full batch (a flood), rest this long: the server then takes the GIL in short bursts instead of
# contending with the engine thread all the time; the kernel buffer holds what arrives meanwhile
# (handling capacity stays ~80k msg/s, far above any controller)
FLOOD_PAUSE = 0.005
MAX_BUNDLE_DEPTH = 8
MAX_BUNDLE_ITEMS = 512
STATUS_INTERVAL = 0.02  # at most one /status reply per destination per 20 ms
_TAGS_OK = b"ihfdsbrmtTFN[]"  # the type tags python-osc parses (anything else it logs: refuse first)
_PATTERN_CHARS = "*?[]{}"
_BUNDLE = b"#bundle\x00"

# every received datagram lands in exactly one of: not_allowed, oversize, coalesced (superseded by a later
# value for the same address), not_osc, malformed, parsed; each message of a parsed datagram then in one
# of: applied, bad_args, refused (NaN, bad cue slot, no callback), unknown_address, callback_errors
# processed: datagrams whose handling has finished (received == processed once the server is idle)
COUNTERS = ("received", "processed", "parsed", "applied", "coalesced", "not_allowed", "not_osc", "malformed", "oversize",
            "bad_args", "refused", "unknown_address", "callback_errors", "status_replies", "signal_feedback")


@dataclass(frozen=True)
class Route:
    kind: str  # "param" | "trigger" | "cue_store" | "preset" | "model" | "status"
    name: str = ""
    slot: int | None = None


class _Bad(Exception):
    """A datagram that is not well-formed OSC (counted as malformed)."""


def base_routes() -> dict[str, Route]:
    routes = {f"/{name}": Route("param", name) for name in SPECS}
    routes["/cue/store"] = Route("cue_store")
    for n in range(N_CUES):
        routes[f"/cue/store/{n}"] = Route("trigger", "cue/store", n)
        routes[f"/cue/recall/{n}"] = Route("trigger", "cue/recall", n)
    routes["/noise/reseed"] = Route("trigger", "noise/reseed")
    routes["/freeze/toggle"] = Route("trigger", "freeze/toggle")
    routes["/preset"] = Route("preset")
    routes["/model"] = Route("model")
    routes["/status"] = Route("status")
    return routes


def target_route(target: str) -> Route:
    name, slot = parse_target(target)
    if name in SPECS and slot is None:
        return Route("param", name)
    if name == "cue/store" and slot is None:
        return Route("cue_store")
    return Route("trigger", name, slot)


def parse_hostport(text: str, what: str = "--osc-feedback") -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{what} expects HOST:PORT (e.g. 127.0.0.1:9001), got {text!r}")
    return host.strip("[]"), int(port)


def parse_allow(items) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for item in items or ():
        for part in str(item).split(","):
            if part.strip():
                try:
                    nets.append(ipaddress.ip_network(part.strip(), strict=False))
                except ValueError:
                    raise UserError(f"--osc-allow: {part.strip()!r} is not an IP address or network "
                                    "(e.g. 192.168.1.20 or 192.168.1.0/24)") from None
    return nets


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
        if data[tag_at + 1:tag_end].translate(None, _TAGS_OK):
            raise _Bad("unknown type tag")
    try:
        return OscMessage(data)
    except Exception as exc:  # ParseError, UnicodeDecodeError in a string argument, struct errors...
        raise _Bad(type(exc).__name__) from None


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


def _noop(*_a) -> None:
    return None


class OscServer(BlockingOSCUDPServer):
    """Serve OSC into `store` from a background thread: start() / stop().

    port 0 picks a free port (see .port). `allow`: IP networks heard besides loopback; None hears everyone.
    `feedback`: (host, port) that /status replies go to instead of the sender.
    """

    def __init__(self, store: ParamStore, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 allow=None, feedback: tuple[str, int] | None = None,
                 on_preset: Callable[[str], object] | None = None,
                 on_model: Callable[[str], object] | None = None,
                 status: Callable[[], dict] | None = None,
                 aliases: dict[str, str] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.feedback = feedback
        self.on_preset, self.on_model, self.status_fn = on_preset, on_model, status
        self.log = log or (lambda line: None)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._allow = None if allow is None else list(allow)
        self._allowed_cache: dict[str, bool] = {}
        self._last_reply: dict[tuple, float] = {}
        self._last_log: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_aliases(aliases or {})
        try:
            super().__init__((host, port), Dispatcher(strict_timing=False))
        except OSError as exc:
            why = "is in use (another autoencoded live? pick one with --osc-port)" if \
                getattr(exc, "errno", None) in (98, 48, 10048) else f"cannot be opened: {exc.strerror or exc}"
            raise UserError(f"OSC {host}:{port} {why}") from None
        self._build_dispatcher()
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:
            pass
        self.rcvbuf = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    # -- routing ---------------------------------------------------------------------------------
    def set_aliases(self, aliases: dict[str, str]) -> None:
        """Replace the alias table (address -> control target) in one step; safe while serving."""
        routes = base_routes()
        for address, target in aliases.items():
            routes.setdefault(address, target_route(target))
        self._routes = routes
        self._coalescable = {a.encode() for a, r in routes.items() if r.kind == "param"}
        if hasattr(self, "_dispatcher"):
            self._build_dispatcher()

    def _build_dispatcher(self) -> None:
        d = Dispatcher(strict_timing=False)
        for address, route in self._routes.items():
            if route.kind in ("param", "trigger", "cue_store"):  # patterns never reach /preset /model /status
                d.map(address, _noop, route)
        self._dispatcher = d

    @property
    def port(self) -> int:
        return self.server_address[1]

    def aliases_for(self, name: str) -> list[str]:
        return [a for a, r in self._routes.items() if r == Route("param", name) and a != f"/{name}"]

    # -- socketserver hooks (kept quiet: nothing here ever prints a traceback) ---------------------
    def verify_request(self, request, client_address) -> bool:
        return self.allowed(client_address[0])

    def handle_error(self, request, client_address) -> None:
        self.counters["malformed"] += 1

    def allowed(self, host: str) -> bool:
        if self._allow is None:
            return True
        ok = self._allowed_cache.get(host)
        if ok is None:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
                ok = ip.is_loopback or any(ip in net for net in self._allow)
            except ValueError:
                ok = False
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[host] = ok
        return ok

    # -- the receive loop ------------------------------------------------------------------------
    def start(self) -> OscServer:
        self._thread = threading.Thread(target=self.serve_forever, name="osc-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()

    def shutdown(self) -> None:
        self._stop.set()

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
                self._say("error", f"osc: {type(exc).__name__}: {exc}")
        c["processed"] = n
        return read

    def _coalesce(self, batch):
        """Latest value wins: drop earlier parameter messages superseded by a later one in the batch."""
        seen: set[bytes] = set()
        keep = []
        coalescable = self._coalescable
        for data, client in reversed(batch):
            if data[:1] == b"/":
                address = data[:data.find(b"\x00")]
                if address in coalescable:
                    if address in seen:
                        self.counters["coalesced"] += 1
                        continue
                    seen.add(address)
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
        for msg in messages:
            self.dispatch(msg.address, msg.params, client)

    # -- handlers --------------------------------------------------------------------------------
    def dispatch(self, address: str, args: list, client: tuple) -> None:
        route = self._routes.get(address)
        if route is not None:
            self._apply(route, args, client)
            return
        if any(ch in address for ch in _PATTERN_CHARS):
            matched = [h.args[0] for h in self._dispatcher.handlers_for_address(address)]
            for r in matched:
                self._apply(r, args, client)
            if matched:
                return
        self.counters["unknown_address"] += 1

    def _apply(self, route: Route, args: list, client: tuple) -> None:
        c = self.counters
        kind = route.kind
        if kind == "param":
            if len(args) != 1 or not isinstance(args[0], (int, float)):
                c["bad_args"] += 1
            elif self.store.set(route.name, args[0]):
                c["applied"] += 1
            else:
                c["refused"] += 1
        elif kind == "trigger":
            if len(args) > 1 or (args and not isinstance(args[0], (int, float))):
                c["bad_args"] += 1
                return
            if args and not args[0] > 0.5:  # a button's release (0.0) or NaN: nothing to do
                return
            self.store.trigger(route.name, route.slot)
            c["applied"] += 1
        elif kind == "cue_store":
            if len(args) != 1 or not isinstance(args[0], (int, float)):
                c["bad_args"] += 1
            elif self.store.store_cue(args[0]):
                c["applied"] += 1
            else:
                c["refused"] += 1
        elif kind in ("preset", "model"):
            if len(args) != 1 or not isinstance(args[0], str) or not args[0].strip() or len(args[0]) > 1024:
                c["bad_args"] += 1
                return
            callback = self.on_preset if kind == "preset" else self.on_model
            if callback is None:
                c["refused"] += 1
                return
            try:
                callback(args[0].strip())
                c["applied"] += 1
            except Exception as exc:  # UserError from a bad name, a failed load...
                c["callback_errors"] += 1
                self._say(kind, f"osc: /{kind} {args[0].strip()!r}: {exc}")
        elif kind == "status":
            self.reply_status(client)

    # -- /status -----------------------------------------------------------------------------------
    def status_values(self) -> dict[str, object]:
        values: dict[str, object] = {}
        if self.status_fn is not None:
            try:
                values.update(self.status_fn() or {})
            except Exception as exc:
                self.counters["callback_errors"] += 1
                self._say("status", f"osc: /status: {type(exc).__name__}: {exc}")
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
        dest = self.feedback or (client[0], client[1])
        now = time.monotonic()
        if now - self._last_reply.get(dest, -1.0) < STATUS_INTERVAL:
            return
        if len(self._last_reply) > 1024:
            self._last_reply.clear()
        self._last_reply[dest] = now
        try:
            self.socket.sendto(self.status_packet(), dest)
            self.counters["status_replies"] += 1
        except OSError as exc:
            self._say("status", f"osc: /status reply to {dest[0]}:{dest[1]} failed: {exc.strerror or exc}")

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
        try:
            self.socket.sendto(bundle.build().dgram, self.feedback)
            self.counters["signal_feedback"] += 1
        except OSError as exc:
            self._say("signals", f"osc: signal feedback to {self.feedback[0]}:{self.feedback[1]} failed: "
                                 f"{exc.strerror or exc}")
            return False
        return True

    def _say(self, kind: str, line: str) -> None:
        """Log at most one line per kind per second (a flood of bad /preset names must not flood stderr)."""
        now = time.monotonic()
        if now - self._last_log.get(kind, -10.0) >= 1.0:
            self._last_log[kind] = now
            self.log(line)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)
