"""ParamStore: clamping, refusal of NaN and wrong types, atomic updates, cues, per-frame snapshots; the checks
register_control makes on a new control."""

from __future__ import annotations

import math
import threading

import pytest

from autoencoded.live.control.params import (
    CONTROLS,
    N_CUES,
    SPECS,
    TRIGGERS,
    ControlRefused,
    Params,
    ParamStore,
    Spec,
    coerce,
    parse_target,
    register_control,
    target_name,
)


def test_defaults_match_specs():
    values = ParamStore().snapshot().values()
    assert set(values) == set(SPECS)
    for name, spec in SPECS.items():
        assert values[name] == spec.default, name


@pytest.mark.parametrize("name,value,expected", [
    ("noise", 2.5, 1.0), ("noise", -3, 0.0), ("noise", math.inf, 1.0), ("noise", -math.inf, 0.0),
    ("noise/max", 99.0, 4.0), ("smooth", 0.25, 0.25), ("mix", 7, 1.0),
    ("noise/seed", 3.6, 4), ("noise/seed", -5, 0), ("noise/seed", math.inf, 2**31 - 1),
    ("freeze", 1.0, 1), ("freeze", 0.2, 0), ("freeze", True, 1), ("freeze", 9, 1),
    ("cue/recall", 99, N_CUES - 1), ("cue/recall", -7, -1),
])
def test_values_are_clamped(name, value, expected):
    store = ParamStore()
    assert store.set(name, value)
    got = store.snapshot().values()[name]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name,value", [
    ("noise", math.nan), ("noise", "0.5"), ("noise", None), ("noise", [0.5]), ("smooth", b"\x00"),
    ("nosie", 0.5), ("noise/seed", math.nan),
])
def test_nan_wrong_types_and_unknown_names_are_refused_and_counted(name, value):
    store = ParamStore(noise=0.3)
    before = store.snapshot()
    assert not store.set(name, value)
    assert store.rejected == 1
    after = store.snapshot()
    assert after.noise == pytest.approx(0.3) and after.version == before.version


def test_coerce_raises_for_unknown():
    with pytest.raises(ValueError):
        coerce("bogus", 1.0)


def test_initial_keyword_values():
    p = ParamStore(noise=0.5, noise_drift=0.0, cue_mix=0.25, mix=0.5).snapshot()
    assert (p.noise, p.noise_drift, p.cue_mix, p.mix) == (0.5, 0.0, 0.25, 0.5)


def test_update_is_atomic_and_counts_refusals():
    store = ParamStore(mix=0.0)
    seen: list[Params] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(store.snapshot())

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        v = (i % 2) * 1.0
        assert store.update({"noise": v, "smooth": v, "mix": v, "nosie": 1}) == 1
    stop.set()
    t.join()
    # every snapshot saw the three values together, never half an update
    assert all(p.noise == p.smooth == p.mix for p in seen)
    assert store.rejected == 300


def test_latest_value_wins_and_version_counts_changes():
    store = ParamStore()
    v0 = store.snapshot().version
    for v in (0.1, 0.9, 0.4):
        store.set("noise", v)
    p = store.snapshot()
    assert p.noise == pytest.approx(0.4) and p.version == v0 + 3


def test_changed_at_stamps_accepted_writes_only():
    store = ParamStore()
    assert store.changed_at("noise") is None
    store.set("noise", 0.5)
    t1 = store.changed_at("noise")
    assert t1 is not None
    store.set("noise", math.nan)
    assert store.changed_at("noise") == t1
    store.set("noise/drift", 0.5)
    assert store.changed_at("noise/drift") >= t1


def test_cue_store_is_drained_by_one_snapshot_and_bounded():
    store = ParamStore()
    assert store.press("cue/store", 3) and store.press("cue/store", 3.0) and store.press("cue/store", 7)
    for _ in range(10_000):  # a flood of the same request holds one entry, not ten thousand
        store.press("cue/store", 3)
    assert store.snapshot().cue_store == (3, 7)
    assert store.snapshot().cue_store == ()


@pytest.mark.parametrize("slot", [-1, N_CUES, 2.5, math.nan, math.inf, "3", None, True])
def test_bad_cue_slots_are_refused(slot):
    store = ParamStore()
    assert not store.press("cue/store", slot)
    assert store.rejected == 1 and store.snapshot().cue_store == ()


def test_reseed_and_toggle():
    store = ParamStore(noise_seed=2**31 - 1)
    assert store.press("noise/reseed") and store.snapshot().noise_seed == 0
    assert store.press("noise/reseed") and store.snapshot().noise_seed == 1
    assert store.press("freeze/toggle") and store.snapshot().freeze is True
    assert store.press("/freeze/toggle") and store.snapshot().freeze is False


def test_parse_target():
    assert parse_target("noise") == ("noise", None)
    assert parse_target("/noise/drift") == ("noise/drift", None)
    assert parse_target("cue/recall") == ("cue/recall", None)  # the value, not the row of buttons
    assert parse_target("cue/recall/15") == ("cue/recall/N", 15)
    assert parse_target("cue/store/0") == ("cue/store/N", 0)
    assert parse_target("cue/store") == ("cue/store/N", None)  # the slot comes with the value
    assert parse_target("noise/reseed") == ("noise/reseed", None)
    for bad in ("cue/recall/16", "cue/store/-1", "cue/store/x", "cue/store/\u00b2", "cue/store/N", "noize", "",
                "mix/1"):
        with pytest.raises(ValueError):
            parse_target(bad)
    with pytest.raises(ValueError):
        parse_target(3)
    for target in ("noise", "cue/recall/3", "freeze/toggle", "cue/store"):
        assert target_name(*parse_target(target)) == target


def test_buttons_fire_one_shot_actions():
    store = ParamStore()
    assert store.press("noise/reseed") and store.peek().noise_seed == 1
    assert store.press("freeze/toggle") and store.peek().freeze
    assert store.press("cue/recall/5") and store.peek().cue_recall == 5
    assert store.press("cue/store", 3) and store.snapshot().cue_store == (3,)
    rejected = store.rejected
    assert not store.press("cue/store", 16) and not store.press("explode") and not store.press("noise")
    assert store.rejected == rejected + 3


def test_every_control_is_one_entry_of_the_table():
    """OSC addresses, the web remote's list and MIDI targets all come from CONTROLS."""
    from autoencoded.live.control.osc import base_routes

    routes = base_routes()
    described = ParamStore().describe()
    for key, control in CONTROLS.items():
        slots = control.slots if key in TRIGGERS else 0
        for name in [target_name(key, n) for n in range(slots)] or [key]:
            assert f"/{name}" in routes and name in described, name
            assert parse_target(name)[0] == key
    # /cue/store takes its slot as the argument; the list names each button instead
    assert set(described) == {a[1:] for a in routes} - {"preset", "model", "status", "cue/store"}
    assert described["noise"] == {"type": "float", "value": 0.0, "min": 0.0, "max": 1.0, "default": 0.0,
                                  "help": SPECS["noise"].help}
    assert described["freeze"]["type"] == "toggle" and described["noise/seed"]["type"] == "int"
    assert described["cue/recall/3"] == {"type": "trigger", "help": "blend toward cue 3"}


def test_apply_is_all_or_nothing_with_osc_validation():
    store = ParamStore()
    before = store.peek()
    bad_batches = [{"noise": 0.5, "nosie": 1}, {"noise": 0.5, "mix": "loud"}, {"noise": math.nan},
                   {"noise": 0.5, "cue/recall/3": "yes"}, {"cue/store": 99}, {"cue/store/99": True}, {"noise": None}]
    for bad in bad_batches:
        with pytest.raises(ControlRefused) as info:
            store.apply(bad)
        assert info.value.name in bad and "\n" not in str(info.value)
        assert store.peek() == before and store.snapshot().cue_store == ()
    assert store.rejected == len(bad_batches)
    changed = store.apply({"noise": 7, "mix": 0.25, "cue/recall/3": True, "noise/reseed": 1.0,
                           "freeze/toggle": False, "cue/store": 2})
    p = store.snapshot()
    assert (p.noise, p.mix, p.cue_recall, p.noise_seed, p.freeze, p.cue_store) == (1.0, 0.25, 3, 1, False, (2,))
    assert changed == {"noise": 1.0, "mix": 0.25, "cue/recall": 3, "noise/seed": 1}
    assert p.version == before.version + 1  # one step: no snapshot saw half of it



GOOD = Spec(float, 0.0, 1.0, 0.5, "a new fader")


@pytest.mark.parametrize("name, spec, says", [
    ("Grain", GOOD, "lower-case words"), ("grain/", GOOD, "lower-case words"), ("cue/recall/3", GOOD, "lower-case"),
    ("", GOOD, "lower-case"), (7, GOOD, "lower-case"),
    ("noise", GOOD, "taken"), ("noise_max", GOOD, "taken"), ("cue/store", GOOD, "taken"), ("values", GOOD, "taken"),
    ("version", GOOD, "taken"), ("status", GOOD, "OSC command"),
    ("grain", (float, 0.0, 1.0, 0.5, "a tuple"), "expected a Spec"), ("grain", Spec(str, 0, 1, 0, "x"), "float or int"),
    ("grain", Spec(float, None, 1.0, 0.5, "x"), "finite numbers"), ("grain", Spec(float, 0.0, math.inf, 0.5, "x"), "finite"),
    ("grain", Spec(float, 0.0, 1.0, math.nan, "x"), "finite"), ("grain", Spec(float, 0.0, 1.0, True, "x"), "finite"),
    ("grain", Spec(int, 0, 10, 2.5, "x"), "whole numbers"), ("grain", Spec(float, 1.0, 1.0, 1.0, "x"), "empty"),
    ("grain", Spec(float, 0.0, 1.0, 2.0, "x"), "outside its range"), ("grain", Spec(float, 0.0, 1.0, 0.5, ""), "help"),
    ("grain", Spec(float, 0.0, 1.0, 0.5, "two\nlines"), "help"), ("grain", Spec(float, 0.0, 1.0, 0.5, None), "help"),
])
def test_a_bad_new_control_is_refused_naming_it_and_the_table_is_untouched(name, spec, says):
    before = dict(CONTROLS)
    with pytest.raises(ValueError, match=f"control {name!r}: .*{says}"):
        register_control(name, spec)
    assert CONTROLS == before


def test_a_good_new_control_is_a_field_of_every_frame():
    register_control("grain/size", Spec(int, 1, 8, 2, "grain size in pixels"))
    try:
        assert ParamStore(grain_size=99).snapshot().grain_size == 8  # clamped to its range like every control
        with pytest.raises(ValueError, match="taken"):
            register_control("grain/size", Spec(int, 1, 8, 2, "again"))
    finally:
        del CONTROLS["grain/size"]
