"""FeatureStore against the real redis-server: order independence, decay, TTLs, replay, dups."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from learnloop.events import Event
from learnloop.features import STATS_KEY, TOO_LATE, FeatureStore, decay_to
from learnloop.objective import DEFAULT_OBJECTIVES
from learnloop.settings import load_settings

T0 = 1_767_225_600.0
TOPIC = "interactions"
FEATURE_PREFIXES = ("fu:", "fi:", "fui:")


def ev(n: int, type_: str = "impression", user: str = "u1", item: str | None = "i1",
       dt: float = 0.0, value: float | None = None, event_id: str | None = None) -> Event:
    return Event(event_id=event_id or f"e{n}", ts=T0 + dt, user_id=user, item_id=item,
                 type=type_, value=value)


@pytest.fixture
def store(redis_conn, settings) -> FeatureStore:
    return FeatureStore(redis_conn, settings)


def apply(store: FeatureStore, events: list[Event], first_offset: int = 0, partition: int = 0):
    return store.apply_batch(TOPIC, partition, list(enumerate(events, first_offset)))


def feature_hashes(client) -> dict[str, dict[str, float]]:
    keys = [k.decode() for k in client.scan_iter() if k.decode().startswith(FEATURE_PREFIXES)]
    return {k: decay_to({f.decode(): float(v) for f, v in client.hgetall(k).items()}, None)
            for k in keys}


def feature_stats(client) -> dict[bytes, bytes]:
    """Counters of the feature step; the join's depend on arrival order by design."""
    return {k: v for k, v in client.hgetall(STATS_KEY).items()
            if not k.startswith((b"examples:", b"unattributed:", b"late_exposures:"))}


def dump_all(client) -> dict[str, object]:
    """Every key's raw value (hashes as dicts), to compare whole-database states."""
    out = {}
    for key in client.scan_iter():
        kind = client.type(key)
        readers = {b"hash": client.hgetall, b"list": lambda k: client.lrange(k, 0, -1),
                   b"zset": lambda k: client.zrange(k, 0, -1, withscores=True)}
        out[key] = readers.get(kind, client.get)(key)
    return out


def assert_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, fields in expected.items():
        assert actual[key].keys() == fields.keys(), key
        for field, value in fields.items():
            close = math.isclose(actual[key][field], value, rel_tol=1e-9, abs_tol=1e-12)
            assert close, (key, field)


# -- (a) order independence ---------------------------------------------------------------

SPREAD_S = 3 * 86_400  # event times of one generated history


def lenient_store(client, lateness_s: int = SPREAD_S, **overrides: object) -> FeatureStore:
    """A store whose objectives allow ``lateness_s``: out-of-order events within it apply
    (``overrides``: other settings)."""
    objectives = {name: objective.model_copy(update={"allowed_lateness_s": lateness_s})
                  for name, objective in DEFAULT_OBJECTIVES.items()}
    return FeatureStore(client, load_settings(objectives=objectives, **overrides))


event_specs = st.lists(
    st.tuples(
        st.sampled_from(["impression", "click", "purchase", "rating"]),
        st.sampled_from(["u1", "u2"]),
        st.sampled_from(["i1", "i2", None]),
        st.floats(0, SPREAD_S, allow_nan=False),
        st.none() | st.floats(0, 1000, allow_nan=False),
    ),
    min_size=1, max_size=25,
)


@hsettings(max_examples=30, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=event_specs, data=st.data())
def test_any_order_and_batching_gives_the_same_features(redis_conn, specs, data):
    """Within the allowed lateness (here the whole history), order does not matter."""
    store = lenient_store(redis_conn)
    events = [ev(n, t, u, i, dt, v) for n, (t, u, i, dt, v) in enumerate(specs)]
    redis_conn.flushdb()
    apply(store, events)
    expected, stats = feature_hashes(redis_conn), feature_stats(redis_conn)

    for _ in range(2):
        order = data.draw(st.permutations(events), label="order")
        cuts = sorted(data.draw(st.sets(st.integers(1, len(order) - 1) if len(order) > 1
                                        else st.nothing()), label="cuts"))
        redis_conn.flushdb()
        for start, stop in zip([0, *cuts], [*cuts, len(order)], strict=True):
            apply(store, order[start:stop], first_offset=start)
        assert_close(feature_hashes(redis_conn), expected)
        assert feature_stats(redis_conn) == stats
        assert store.applied_offset(TOPIC, 0) == len(order) - 1


# -- (b) decay -----------------------------------------------------------------------------

def test_one_impression_reads_one_half_after_one_half_life(store, settings):
    apply(store, [ev(1)])
    assert store.read("u1", "i1", at=T0)["u.impression|3600"] == 1.0
    for hl in settings.half_lives_s:
        features = store.read("u1", "i1", at=T0 + hl)
        for prefix in ("u", "i", "ui"):
            assert features[f"{prefix}.impression|{hl}"] == pytest.approx(0.5, rel=1e-12)
            assert features[f"{prefix}.last|impression"] == T0
            assert features[f"{prefix}.t"] == T0 + hl  # values are as of the read time


def test_values_decay_into_sums(store):
    apply(store, [ev(1, "purchase", value=10.0), ev(2, "purchase", dt=3600, value=4.0)])
    features = store.read("u1", "i1", at=T0 + 7200)
    assert features["u.purchase|sum|3600"] == pytest.approx(10 / 4 + 4 / 2, rel=1e-12)
    assert features["u.purchase|3600"] == pytest.approx(1 / 4 + 1 / 2, rel=1e-12)


# -- (c) TTLs ------------------------------------------------------------------------------

def test_feature_keys_expire_and_watermarks_do_not(store, redis_conn, settings):
    apply(store, [ev(1), ev(2, "click", dt=5, value=1.0), ev(3, "impression", item=None)])
    apply(store, [ev(4, "click", user="u2", item="i2")], first_offset=3, partition=1)
    ttls = {k.decode(): redis_conn.ttl(k) for k in redis_conn.scan_iter()}
    expiring = ("fu:", "fi:", "fui:", "snap:", "dedup:", "pend:", "pendu:")
    durable = ("wm:", "etw:", "due:", "stats:", "outbox:")  # never expire
    by_prefix = {p: [k for k in ttls if k.startswith(p)] for p in expiring + durable}
    assert all(by_prefix.values()), f"a key family is missing: {by_prefix}"
    assert set(ttls) == {k for keys in by_prefix.values() for k in keys}, "unknown key family"
    for prefix, keys in by_prefix.items():
        for key in keys:
            if prefix in durable:
                assert ttls[key] == -1, key
            else:
                assert ttls[key] > 0, key
    assert 0 < ttls["fu:u1"] <= settings.feature_ttl_s
    longest = max(o.window_s + o.allowed_lateness_s for o in settings.objectives.values())
    assert longest < ttls["snap:e1"] <= max(settings.snapshot_ttl_s, longest + 86_400)
    assert 0 < ttls["dedup:u1"] <= settings.dedup_ttl_s


# -- (d) replay ----------------------------------------------------------------------------

def test_replaying_a_batch_changes_nothing_and_returns_the_stored_snapshots(store, redis_conn):
    batch = [ev(1, "click"), ev(2), ev(3, "purchase", value=9.5), ev(4, user="u2")]
    first = apply(store, batch, first_offset=10)
    before = dump_all(redis_conn)
    again = apply(store, batch, first_offset=10)
    assert dump_all(redis_conn) == before
    assert (first.previous_watermark, again.previous_watermark) == (-1, 13)
    assert [(o.offset, o.status) for o in first.outcomes] == [
        (10, "unattributed:engagement:no_pending_exposure"), (11, "new"), (13, "new")]
    assert [(o.offset, o.status) for o in again.outcomes] == [(11, "replay"), (13, "replay")]
    assert [o.snapshot for o in again.outcomes] == [o.snapshot for o in first.outcomes[1:]]


def test_partial_replay_applies_only_the_new_tail(store, redis_conn):
    apply(store, [ev(1), ev(2, "click")])
    result = apply(store, [ev(2, "click"), ev(3, "click")], first_offset=1)
    assert result.previous_watermark == 1
    assert store.read("u1", None, at=T0)["u.click|3600"] == 2.0
    assert redis_conn.hget(STATS_KEY, "events") == b"3"


# -- (e) duplicates ------------------------------------------------------------------------

def test_repeated_event_id_at_a_new_offset_is_a_dup_and_not_counted(store, redis_conn):
    apply(store, [ev(1)])
    before = feature_hashes(redis_conn)
    result = apply(store, [ev(1, dt=60), ev(9, "click", event_id="e1")], first_offset=1)
    assert [(o.offset, o.status, o.snapshot) for o in result.outcomes] == [
        (1, "dup", None), (2, "dup", None)]
    assert feature_hashes(redis_conn) == before
    assert redis_conn.hgetall(STATS_KEY) == {b"events": b"1", b"exposures": b"1",
                                             b"duplicates": b"2"}
    assert store.applied_offset(TOPIC, 0) == 2


DEDUP_WINDOW_S = 3600


def dedup_store(client) -> FeatureStore:
    """Lateness LATENESS_S, de-duplication window DEDUP_WINDOW_S."""
    return lenient_store(client, LATENESS_S, dedup_ttl_s=DEDUP_WINDOW_S)


def dedup_ids(client, user: str = "u1") -> set[str]:
    return {k.decode() for k in client.hkeys(f"dedup:{user}")} - {""}


def test_ids_older_than_the_dedup_window_in_event_time_are_forgotten_and_their_repeats_late(
    redis_conn,
):
    store = dedup_store(redis_conn)
    old = [ev(n, "click", dt=n) for n in range(3)]
    apply(store, old)
    redis_conn.set(f"wm:scores:{TOPIC}:0", 1)  # e0, e1 scored: a restart resumes after them
    later = [ev(n, "click", dt=DEDUP_WINDOW_S + 60 + n) for n in range(3, 20)]
    # offset 16 prunes e0 and e1: older than the window, and scored; e2 is not scored yet
    apply(store, later, first_offset=3)
    marks = {k.decode(): v.decode() for k, v in redis_conn.hgetall("dedup:u1").items()}
    # field '': the next prune is due an eighth of the window after the newest then (e15)
    assert float(marks.pop("")) == T0 + DEDUP_WINDOW_S + 75 + DEDUP_WINDOW_S / 8
    assert sorted(marks, key=lambda k: int(k[1:])) == [f"e{n}" for n in range(2, 20)]
    assert marks["e5"] == f"{int(T0) + DEDUP_WINDOW_S + 60 + 5}|0@5"  # second|partition@offset
    assert 0 < redis_conn.ttl("dedup:u1") <= DEDUP_WINDOW_S

    again = apply(store, [old[0], later[-1]], first_offset=20)
    assert [(o.offset, o.status) for o in again.outcomes] == [(20, "late"), (21, "dup")]
    stats = redis_conn.hgetall(STATS_KEY)
    assert (stats[b"events"], stats[b"duplicates"], stats[b"rejected:too_late"]) == (
        b"20", b"1", b"1")
    late_mark = f"{int(T0) + DEDUP_WINDOW_S + 79}|0@20<".encode()  # newest then, origin
    assert redis_conn.hget("dedup:u1", "e0").startswith(late_mark)


def test_a_users_ids_are_pruned_at_most_once_per_eighth_of_the_window(redis_conn):
    """A busy user's hash is read whole a few times per window, not every 16th offset."""
    store = dedup_store(redis_conn)
    clicks = lambda first, stop, dt: [ev(n, "click", dt=dt + n)  # noqa: E731
                                      for n in range(first, stop)]
    apply(store, clicks(0, 3, 0))
    apply(store, clicks(3, 17, DEDUP_WINDOW_S + 60), first_offset=3)  # offset 16 prunes:
    assert {"e0", "e1", "e2"} <= dedup_ids(redis_conn)  # e0-e2 old, but not scored yet
    redis_conn.set(f"wm:scores:{TOPIC}:0", 16)  # now they are
    apply(store, clicks(17, 33, DEDUP_WINDOW_S + 60), first_offset=17)
    assert {"e0", "e1", "e2"} <= dedup_ids(redis_conn)  # offset 32: no prune due yet
    apply(store, clicks(33, 49, DEDUP_WINDOW_S + 60 + DEDUP_WINDOW_S / 8), first_offset=33)
    assert dedup_ids(redis_conn) == {f"e{n}" for n in range(3, 49)}  # offset 48: due


def test_markers_of_the_previous_layout_still_catch_repeats_and_replays(store, redis_conn):
    """A deployment upgraded from ``seen:{event_id}`` markers: repeats of events applied
    before the upgrade are duplicates, and their offsets replay as before."""
    first = apply(store, [ev(1), ev(2, "click", dt=5)])
    for key in ("dedup:u1", f"wm:dedup:{TOPIC}:0"):  # as the previous version left it
        redis_conn.delete(key)
    redis_conn.set("seen:e1", f"wm:features:{TOPIC}:0@0", ex=3600)
    redis_conn.set("seen:e2", f"wm:features:{TOPIC}:0@1", ex=3600)
    redis_conn.set("seen:e3", f"wm:features:{TOPIC}:0@7", ex=3600)  # an id reused later

    replay = apply(store, [ev(1), ev(2, "click", dt=5)])
    assert [(o.offset, o.status, o.snapshot) for o in replay.outcomes] == [
        (0, "replay", first.outcomes[0].snapshot)]
    later = apply(store, [ev(1), ev(2, "click", dt=5), ev(3, dt=6)], first_offset=2)
    assert [(o.offset, o.status) for o in later.outcomes] == [(2, "dup"), (3, "dup"),
                                                              (4, "new")]
    assert float(redis_conn.get(f"wm:dedup:{TOPIC}:0")) == T0 + 5  # the newest then
    assert redis_conn.ttl(f"wm:dedup:{TOPIC}:0") == -1


# -- (f) point-in-time snapshots -----------------------------------------------------------

def test_exposure_snapshot_excludes_itself_but_includes_earlier_events(store):
    result = apply(store, [ev(1, "click"), ev(2, dt=10), ev(3, dt=20)])
    second, third = (o.snapshot for o in result.outcomes if o.status == "new")
    decay = lambda dt: 2.0 ** (-dt / 3600)  # noqa: E731
    assert second["u.click|3600"] == pytest.approx(decay(10), rel=1e-12)
    assert second["ui.click|3600"] == pytest.approx(decay(10), rel=1e-12)
    assert not any("impression" in field for field in second)
    assert third["i.impression|3600"] == pytest.approx(decay(10), rel=1e-12)
    assert third["u.click|3600"] == pytest.approx(decay(20), rel=1e-12)
    assert third["ui.last|impression"] == T0 + 10


def test_first_exposure_of_a_user_has_an_empty_snapshot(store):
    (outcome,) = apply(store, [ev(1)]).outcomes
    assert outcome.status == "new" and outcome.snapshot == {}


# -- (g) too late --------------------------------------------------------------------------

LATENESS_S = 600


def too_late(events: list[Event], lateness_s: float) -> list[int]:
    """Indexes of the events older than the newest event applied before them minus
    ``lateness_s`` (a too-late event is not applied, so it never moves the newest)."""
    newest, late = -math.inf, []
    for n, event in enumerate(events):
        if event.ts < newest - lateness_s:
            late.append(n)
        else:
            newest = max(newest, event.ts)
    return late


@hsettings(max_examples=25, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=event_specs, data=st.data())
def test_events_behind_the_watermark_are_too_late_in_any_batching_and_on_replay(
    redis_conn, specs, data
):
    store = lenient_store(redis_conn, LATENESS_S)
    events = [ev(n, t, u, i, dt, v) for n, (t, u, i, dt, v) in enumerate(specs)]
    late = too_late(events, LATENESS_S)
    on_time = [e for n, e in enumerate(events) if n not in late]
    redis_conn.flushdb()
    apply(store, on_time)
    expected = feature_hashes(redis_conn)

    redis_conn.flushdb()
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(events) - 1, 1))), label="cuts"))
    outcomes = [o for start, stop in zip([0, *cuts], [*cuts, len(events)], strict=True)
                for o in apply(store, events[start:stop], first_offset=start).outcomes]
    refused = [o for o in outcomes if o.status == "late"]
    assert [o.offset for o in refused] == late
    assert all(o.rejection.reason == TOO_LATE and "older" in o.rejection.detail
               for o in refused)
    assert_close(feature_hashes(redis_conn), expected)
    stats = redis_conn.hgetall(STATS_KEY)
    assert int(stats.get(b"rejected:too_late", 0)) == len(late)
    assert int(stats[b"events"]) == len(on_time)

    before = dump_all(redis_conn)
    replay = apply(store, events)  # every offset again, one batch: the same verdicts
    assert [o.offset for o in replay.outcomes if o.status == "late"] == late
    assert dump_all(redis_conn) == before


def test_a_retry_of_a_too_late_event_is_a_duplicate(redis_conn):
    store = lenient_store(redis_conn, LATENESS_S)
    first = apply(store, [ev(1, dt=LATENESS_S + 1), ev(2)])
    assert [(o.offset, o.status) for o in first.outcomes] == [(0, "new"), (1, "late")]
    again = apply(store, [ev(2)], first_offset=2)
    assert [(o.offset, o.status) for o in again.outcomes] == [(2, "dup")]
    assert redis_conn.hgetall(STATS_KEY) == {b"events": b"1", b"exposures": b"1",
                                             b"rejected:too_late": b"1", b"duplicates": b"1"}


def test_events_within_the_allowed_lateness_apply(redis_conn):
    store = lenient_store(redis_conn, LATENESS_S)
    result = apply(store, [ev(1, dt=LATENESS_S), ev(2), ev(3, "click", dt=-1e-3)])
    assert [o.offset for o in result.outcomes if o.status == "late"] == [2]  # e2: exactly at
    assert store.read("u1", "i1")["u.impression|3600"] > 1.0  # e1 and e2 both counted


def test_forward_decay_rebases_a_hash_far_from_its_base(store, redis_conn):
    """Past REBASE_HALF_LIVES shortest half-lives the stored fields are rewritten as of a
    newer base, and the features as of any time still follow the closed form."""
    day = 86_400.0
    times = [T0, T0 + 3 * day, T0 + 6 * day]  # 72 shortest half-lives apart: rebases
    events = [Event(event_id=f"e{n}", ts=t, user_id="u1", type="impression", item_id="i1")
              for n, t in enumerate(times)]
    apply(store, events)
    raw = {k.decode(): float(v) for k, v in redis_conn.hgetall("fu:u1").items()}
    assert raw["b"] > T0
    at = times[-1] + 1800.0
    for hl in (3600, 86_400, 604_800):
        expected = sum(2 ** (-(at - t) / hl) for t in times)
        assert decay_to(raw, at)[f"impression|{hl}"] == pytest.approx(expected, rel=1e-12)
    assert max(abs(v) for k, v in raw.items() if "|" in k and not k.startswith("last")) < 2 ** 61
