"""`autoencoded live`: a camera, clip, folder or NDI source through the model in real time, out to a virtual
camera, a window, NDI, Spout, Syphon, a file or nowhere (every kind of output is an entry of SINKS,
live/io/sinks.py). The loop itself lives in live/loop/pipeline.py.

Structure (so that controls can be added in one place): parse options -> open the outputs (a missing
device fails at once, before the model loads) -> open the engine -> choose the input (one line says what
was chosen when left to the defaults) -> build the Pipeline -> attach controls to pipeline.params /
pipeline.request_model / pipeline.stats -> pipeline.run().

Exit status: 0 after --duration, --max-frames or a closed window; 130 after Ctrl-C, SIGTERM or SIGHUP (the
recording is finished either way); 1 when an output failed (disk full, encoder killed, device gone) or not
one frame came in (a camera that never opened: it is retried all along, as in an outage, and said so).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from autoencoded import signals, stderr
from autoencoded.errors import UserError
from autoencoded.fileio import check_file_name
from autoencoded.live.control.options import ControlsCommand
from autoencoded.live.engines import backend_choices, backend_help
from autoencoded.live.io.sinks import sink_help, sink_list
from autoencoded.media.framing import CROP_MODES
from autoencoded.numbers import Finite
from autoencoded.sizes import VIDEO_SIZE
from autoencoded.text import printable, printable_lines

DEFAULT_RECORDING = "autoencoded-live.mp4"
CAMERA_PROBE_S = 3.0


class Console:
    """Event lines and the live status line on stderr (rewritten in place on a terminal), escaped: they
    quote plugins, network peers and file names, whose text must not drive the terminal."""

    def __init__(self, stream=None, every_non_tty: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every_non_tty
        self._last = 0.0
        self._dirty = False

    def event(self, msg: str) -> None:
        # any thread logs here; write_line holds the lock that also keeps fd 2 from being silenced meanwhile
        with stderr.LOCK:
            clear, self._dirty = ("\r\033[K" if self._dirty else ""), False
            stderr.write_line(self.stream, clear + printable_lines(msg) + "\n")

    def status(self, stats: dict) -> None:
        from autoencoded.live.loop.stats import status_line

        line = printable(status_line(stats), None)
        if self.tty:
            with stderr.LOCK:
                stderr.write_line(self.stream, "\r\033[K" + line)
                self._dirty = True
        elif time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            self.event(line)


def choose_input(spec: str | None, width: int, height: int, fps: float) -> tuple[object, str]:
    """-> (Source, why it was chosen, '' when the user named it)."""
    from autoencoded.live.io.sources import CameraSource, VideoFileSource, demo_clip, open_source, probe

    if spec is not None:
        return open_source(spec, width, height, fps), ""
    cam = CameraSource(0, width, height, fps)
    if probe(cam, timeout=CAMERA_PROBE_S):
        return cam, "camera 0 found"
    try:
        clip = demo_clip()
    except UserError:
        raise UserError("no camera found (camera 0 did not open) and the demo clip is missing; "
                        "pass --input FILE, FOLDER or camera:N") from None
    return VideoFileSource(clip), "no camera found, playing the demo clip"


def choose_outputs(specs: tuple[str, ...], width: int, height: int, fps: float, log,
                   overwrite: bool = False) -> tuple[list, str]:
    """-> (sinks, why they were chosen, '' when the user named them)."""
    from autoencoded.live.io.sinks import RecorderSink, VirtualCamSink, WindowSink, open_output, open_sink
    from autoencoded.live.io.sources import has_display

    if specs:
        sinks = [open_sink(s, log=log, overwrite=overwrite) for s in specs]
        try:
            for s in sinks:  # open now: a missing device fails before the camera and model start
                open_output(s, width, height, fps)
        except BaseException:
            for s in sinks:
                s.close()
            raise
        return sinks, ""
    vcam = VirtualCamSink(log=log)
    try:
        vcam.open(width, height, fps)
        return [vcam], "virtual camera found"
    except UserError as exc:
        why = str(exc)
    if has_display():
        return [WindowSink()], f"{why}; showing a window instead"
    # an earlier recording, or one another instance is making, is never replaced: the first free name
    rec = RecorderSink(DEFAULT_RECORDING, log=log, free=True)
    rec.open(width, height, fps)
    return [rec], f"{why}; no display either, recording to ./{rec.path}"


def preset_defaults(preset, model: str | None, input_spec: str | None,
                    outputs: tuple[str, ...]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """A preset's [live] model, input and outputs, where the command line names none (it wins)."""
    model = model or preset.live.get("model")
    input_spec = input_spec or preset.live.get("input")
    if not outputs and preset.live.get("output"):
        out = preset.live["output"]
        outputs = (out,) if isinstance(out, str) else tuple(out)
    return model, input_spec, outputs


def check_not_the_input(outputs: tuple[str, ...], input_spec: str | None) -> None:
    """One line when an --output file is the --input file."""
    for spec in outputs:
        if Path(spec).suffix and input_spec and Path(spec).resolve() == Path(input_spec).resolve():
            raise UserError(f"--output {spec}: would overwrite the input")


def stopped_line(final: dict, interrupted: bool) -> str:
    """The summary line at the end of a show, from the final stats."""
    return (f"stopped{' (interrupted)' if interrupted else ''}: {final['frames_out']} frames out, "
            f"{final['frames_in']} in, engine p50 {final['engine_ms_p50']:.1f} ms, "
            f"latency p50/p99 {final['latency_ms_p50']:.0f}/{final['latency_ms_p99']:.0f} ms, "
            f"dropped {final['dropped']}, engine faults {final['engine_faults']}, "
            f"source outages {final['source_outages']}"
            + (f", loop errors {final['loop_errors']} (last: {final['last_loop_error']})"
               if final["loop_errors"] else ""))


def write_stats_json(path: Path, report: dict, probe: list[dict] | None = None) -> None:
    """The final stats as JSON: written into a device or FIFO (/dev/stdout, a pipe), atomically replacing a
    file; a full disk is one line (the show itself is over and its recordings are finished)."""
    import json

    from autoencoded.fileio import atomic_write_bytes, write_failed

    data = dict(report)
    if probe:
        data["probe"] = probe
    try:
        atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
    except OSError as exc:
        raise write_failed(f"--stats-json {path}", exc, "the stats") from None


# long: the command's lifetime in order (checks, outputs, engine, pipeline, controls, reports); half is its signature
@click.command("live", cls=ControlsCommand, controls=("noise", "memory", "mix"), after="fps")
@click.option("--model", default=None, metavar="MODEL",
              help="Model pack folder, .safetensors checkpoint, run folder, or demo: the bundled demo model (the "
                   "default; a folder named demo is ./demo).")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(backend_choices()), help=backend_help())
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="CPU threads of the onnxruntime engine (default: every core but one, which keeps a core for "
                   "decoding, encoding and OBS; give them all on a machine that does nothing else).")
@click.option("--input", "input_spec", default=None, metavar="SOURCE",
              help="camera:N, /dev/videoN, ndi:NAME, a video file (loops), a folder of images, demo, or probe "
                   "(coded frames that measure the latency at each output) (default: camera 0 if it opens, "
                   "else demo).")
@click.option("--output", "outputs", multiple=True, metavar="SINK",
              help=f"{sink_list()}; repeat for several (default: vcam, else window, else ./{DEFAULT_RECORDING}). "
                   f"{sink_help()}.")
@click.option("--size", default="1280x720", show_default=True, type=VIDEO_SIZE, help="Output size.")
@click.option("--fps", default=30.0, show_default=True, type=Finite(1.0, 240.0), help="Target frame rate.")
@click.option("--overlay", is_flag=True, help="Draw the status line onto the output.")
@click.option("--duration", default=None, type=Finite(0.0, min_open=True), metavar="S",
              help="Stop after S seconds.")
@click.option("--max-frames", default=None, type=click.IntRange(1), metavar="N", help="Stop after N output frames.")
@click.option("--preset", default=None, metavar="NAME|FILE",
              help="A preset: parameters, OSC aliases, MIDI map, and defaults for --model/--input/--output.")
@click.option("--osc-host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="Address the OSC server binds (0.0.0.0 opens it to the LAN; restrict with --osc-allow).")
@click.option("--osc-port", default=9000, show_default=True, type=click.IntRange(0, 65535),
              help="OSC port (0: no OSC).")
@click.option("--osc-allow", multiple=True, metavar="ADDR[/NET]",
              help="Senders heard besides this machine when on the LAN; repeat or separate with commas.")
@click.option("--osc-feedback", default=None, metavar="HOST:PORT",
              help="Send /status replies here instead of back to the sender.")
@click.option("--midi", default=None, metavar="NAME|auto", help="MIDI input port (part of its name, or auto).")
@click.option("--midi-learn", default=None, metavar="PARAM",
              help="Bind the next moved MIDI control to PARAM (e.g. noise, cue/recall/3) and save it to the preset.")
@click.option("--stats-json", default=None, metavar="FILE",
              help="Write the final stats (fps, engine and latency percentiles, frames, drops, faults, outages) "
                   "to FILE as JSON when live stops.")
@click.option("--ndi-localhost", is_flag=True,
              help="Make NDI find and send over 127.0.0.1 only (no network needed): writes ndi-config.v1.json "
                   "into $NDI_CONFIG_DIR (default ~/.config/autoencoded/ndi).")
@click.option("--web", default="127.0.0.1:8080", show_default=True, metavar="[HOST:]PORT",
              help="The web remote (0: off). Any other host than this machine opens it to the LAN, behind a token.")
@click.option("--audio", default=None, metavar="DEVICE",
              help="Audio input for the audio.* signals: default, a device number or part of its name.")
@click.option("--mod", "mods", multiple=True, metavar="SIGNAL:CONTROL:AMOUNT[:ATTACK[:RELEASE]]",
              help="Modulate a control, e.g. audio.bass:noise:0.8 or beat.pulse:mix:-0.5; repeatable.")
@click.option("--tempo", default=None, metavar="link|midi[:PORT]", help="Beat source: Ableton Link or MIDI clock in.")
@click.option("--quantize", default=None, type=click.Choice(["beat", "bar"]),
              help="Hold cue recalls and preset changes until the next beat or bar (needs --tempo).")
@click.option("--crop", default="auto", show_default=True, type=click.Choice(CROP_MODES),
              help="How the input's picture becomes the model's: auto trims a file's black bars, then crops the "
                   "centre if that cuts at most 10% of the picture, else fits it whole (a 4:3 face or a 2.35:1 "
                   "film stays whole); center crops the centre; fit keeps it whole (black bars); none "
                   "stretches. A line at the start says what was done.")
@click.option("--overwrite", is_flag=True, help="Replace an --output file that exists.")
@click.pass_context
def live(ctx: click.Context, model: str | None, backend: str, threads: int | None, input_spec: str | None, outputs: tuple[str, ...],
         size: tuple[int, int], fps: float, controls: dict[str, float | int], overlay: bool, duration: float | None,
         max_frames: int | None, preset: str | None, osc_host: str, osc_port: int, osc_allow: tuple[str, ...],
         osc_feedback: str | None, midi: str | None, midi_learn: str | None, stats_json: str | None,
         ndi_localhost: bool, web: str, audio: str | None, mods: tuple[str, ...], tempo: str | None,
         quantize: str | None, crop: str, overwrite: bool) -> None:
    """Run a camera or video through the model in real time. Ctrl-C stops."""
    import cv2

    from autoencoded.live.control.modulation import mod_option
    from autoencoded.live.control.osc import parse_allow, parse_hostport
    from autoencoded.live.control.params import ParamStore
    from autoencoded.live.control.presets import load_preset
    from autoencoded.live.engines import open_engine
    from autoencoded.live.io.latency_probe import report_lines
    from autoencoded.live.loop.pipeline import Pipeline
    from autoencoded.live.loop.stats import stats_report
    from autoencoded.live.stage import Stage

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    console = Console()
    width, height = size
    # the network options are checked before the model loads: a typo is one line at once
    feedback = parse_hostport(osc_feedback) if osc_feedback else None
    parse_allow(osc_allow)
    the_preset = load_preset(preset) if preset else None
    if the_preset is not None:
        model, input_spec, outputs = preset_defaults(the_preset, model, input_spec, outputs)
    explicit = dict(controls)  # the control options given on the command line (the rest are the defaults)
    check_not_the_input(outputs, input_spec)
    stats_path = check_file_name(stats_json, "--stats-json", special=True) if stats_json else None
    if ndi_localhost:
        ndi_on_localhost(console)
    params = ParamStore(**explicit)
    stage = Stage(params, web=web, audio=audio, mods=[mod_option(m) for m in mods], tempo=tempo, quantize=quantize,
                  log=console.event, web_required=ctx.get_parameter_source("web") == click.core.ParameterSource.COMMANDLINE)
    engine = sinks = None
    try:
        source, in_why = choose_input(input_spec, width, height, fps) if input_spec else (None, "")
        # outputs first: a missing virtual camera or display is said at once, not after the model loads
        sinks, out_why = choose_outputs(outputs, width, height, fps, console.event, overwrite=overwrite)
        engine = open_engine(model, backend=backend, log=console.event, threads=threads, memory=True)
        if source is None:  # the camera probe, after the cheap checks
            source, in_why = choose_input(None, width, height, fps)
        if crop == "auto":
            source.find_bars()
        sinks, taps = tap_probe(source, sinks, explicit, console)
        if in_why or out_why:
            console.event(f"live: {source.name} -> {', '.join(s.name for s in sinks)} "
                          f"({'; '.join(w for w in (in_why, out_why) if w)}; change with --input / --output)")
        pipeline = Pipeline(source, engine, [*sinks, *stage.sinks], params=params, fps=fps, size=(width, height),
                            overlay=overlay, backend=backend, log=console.event, modulate=stage.modulate, crop=crop,
                            threads=threads)
        engine = sinks = None  # the pipeline owns them now
        controls = start_controls(pipeline, stage, params, the_preset, console, osc_host=osc_host,
                                  osc_port=osc_port or None, osc_allow=osc_allow, osc_feedback=feedback, midi=midi,
                                  midi_learn=midi_learn, osc_required=ctx.get_parameter_source("osc_port")
                                  == click.core.ParameterSource.COMMANDLINE)
        params.update(explicit)  # the control options given on the command line win over the preset
        try:
            final = pipeline.run(duration=duration, max_frames=max_frames, status=console.status)
        finally:
            stage.stop()
            controls.stop()
    finally:
        if engine is not None:
            engine.close()
        for s in sinks or ():
            s.close()
    console.event(stopped_line(final, pipeline.interrupted))
    for line in report_lines(taps):
        console.event(line)
    if stats_path is not None:
        write_stats_json(stats_path, stats_report(final), probe=[r for t in taps for r in t.report()])
        console.event(f"stats written to {stats_path}")
    exit_status(ctx, console, pipeline, source, final)


def ndi_on_localhost(console: Console) -> None:
    """--ndi-localhost: NDI told to find and send over 127.0.0.1 (before cyndilib is first imported)."""
    from autoencoded.live.io.ndi import write_localhost_config

    config = write_localhost_config()
    console.event(f"NDI: using 127.0.0.1 only ({config}); give other NDI apps NDI_CONFIG_DIR={config.parent}")


def tap_probe(source, sinks: list, explicit: dict, console: Console) -> tuple[list, list]:
    """-> (sinks, taps): with --input probe every output behind a ProbeTap that reads its codes back, and
    the show played dry (the cells must survive; the engine still runs). Else the sinks as they are."""
    from autoencoded.live.io.latency_probe import ProbeSource, ProbeTap

    if not isinstance(source, ProbeSource):
        return sinks, []
    taps = [ProbeTap(s, source, log=console.event) for s in sinks]
    explicit["mix"] = 0.0  # applied after the preset's values
    console.event("probe: coded frames, played dry (mix 0) so that each output can read them back")
    return taps, taps


def start_controls(pipeline, stage, params, preset, console: Console, **surface):
    """OSC and MIDI (the ControlSurface, `surface` its settings), then the stage's web, audio and tempo,
    attached to the pipeline; when one fails to start, everything started is stopped, the pipeline too."""
    from autoencoded.live.control.surface import ControlSurface

    controls = None
    try:
        controls = ControlSurface(params, preset=preset, on_model=pipeline.request_model, status=pipeline.stats,
                                  log=console.event, on_preset=stage.on_preset, **surface)
        controls.start()
        stage.start(surface=controls, status=pipeline.stats, on_model=pipeline.request_model)
    except BaseException:
        stage.stop()
        if controls is not None:
            controls.stop()
        pipeline.stop()
        raise
    return controls


def exit_status(ctx: click.Context, console: Console, pipeline, source, final: dict) -> None:
    """Exit 1 when an output failed or not one frame came in (each said in one line), 130 when interrupted;
    else return (0)."""
    if pipeline.failed_outputs:
        console.event(f"error: {len(pipeline.failed_outputs)} output(s) failed: {'; '.join(pipeline.failed_outputs)}")
        ctx.exit(1)
    if final["frames_in"] == 0:
        why = final["last_outage"] or "no frame came"
        console.event(f"error: {source.name} gave no frame in {final['uptime_s']:.0f} s "
                      f"({'it never opened: ' if not pipeline.feed.ever_opened else ''}{why}); nothing was played")
        ctx.exit(1)
    if pipeline.interrupted:
        ctx.exit(signals.INTERRUPTED_EXIT)
