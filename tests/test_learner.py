"""The learner against the real broker and redis-server: its progressive metrics equal
River's, no label leaks into features, restarts learn every example exactly once, scorers
hot-swap checkpoints and champions, and the ``models`` commands show and steer it all."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
import pytest
import redis
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry
from river import base, evaluate, metrics
from typer.testing import CliRunner

from consumers.learner import Learner, LearnerState
from learnloop import checkpoints, serving
from learnloop.checkpoints import checkpoint_store
from learnloop.cli import app
from learnloop.features import STATS_KEY, outbox_key
from learnloop.featurize import featurize
from learnloop.objective import FeedbackRule, Objective
from learnloop.reader import read_model_metrics, read_score
from learnloop.scoring import scored_watermark_key
from learnloop.serving import ChampionLoader
from learnloop.settings import Settings
from learnloop.simulate import Simulator
from models.logreg import pipeline
from tests.conftest import Running, RunningConsumer, make_settings, read_examples, wait_for

TOL = 1e-9
QUICK = {"ctr": Objective(exposures=("impression",),
                          feedback={"click": FeedbackRule(label=1, window_s=60)},
                          negative_label=0, allowed_lateness_s=0)}


# -- helpers -------------------------------------------------------------------------------

class RunningLearner(Running):
    """A learner on a background thread (like RunningConsumer)."""

    def __init__(self, settings, client: redis.Redis) -> None:
        registry = CollectorRegistry()
        super().__init__(Learner(settings, client, registry, checkpoint_store(settings, client)),
                         registry)

    @property
    def learner(self):
        return self.worker

    @property
    def state(self):
        return self.learner.state

    def stop_checkpointing(self) -> None:
        """From now on it writes no checkpoint: what it learns is lost, as in a crash."""
        self.learner.checkpoint = lambda: None


@pytest.fixture
def start_learner(redis_conn):
    running: list[RunningLearner] = []

    def start(settings) -> RunningLearner:
        running.append(RunningLearner(settings, redis.Redis.from_url(
            settings.redis_url.get_secret_value())))
        return running[-1]

    yield start
    for learner in running:
        if learner.thread.is_alive():
            learner.close()


def quick_settings(stack, **overrides):
    """One partition (one total order of examples) and a 60 s click objective."""
    return make_settings(stack, partitions=1, objectives=QUICK, **overrides)


def simulated_events(impressions: int, seed: int = 3) -> list[dict]:
    """Impressions a minute apart (hour-long half-lives tell recent clicks from old ones)
    and their clicks, then an event an hour later that closes every window: each
    impression becomes an example."""
    events = list(Simulator(users=200, items=40, seed=seed,
                            seconds_between_impressions=60.0).events(impressions))
    events.append({"event_id": "tick", "ts": events[-1]["ts"] + 3600, "user_id": "bystander",
                   "item_id": "i0", "type": "add_to_cart"})
    return events


def send(producer: KafkaProducer, topic: str, values: list[bytes]) -> None:
    for value in values:
        producer.send(topic, partition=0, value=value)
    producer.flush()


def examples_made(client) -> int:
    stats = client.hgetall(STATS_KEY)
    return sum(int(v) for k, v in stats.items() if k.startswith(b"examples:"))


def all_learned(client, settings, events: list[dict], learner: RunningLearner) -> bool:
    """Every event scored, the outbox drained, and the learner at the join's count."""
    topic = settings.topic_interactions
    return (client.get(scored_watermark_key(topic, 0)) == str(len(events) - 1).encode()
            and not client.exists(outbox_key(topic, 0))
            and learner.state.examples == examples_made(client))


@contextmanager
def learning(stack, settings, events: list[dict]) -> Iterator[tuple[RunningConsumer,
                                                                    RunningLearner]]:
    """Publish ``events``; run an interactions consumer and a learner until all is learned,
    and until the block ends."""
    client = redis.Redis.from_url(stack.redis_url)
    consumer = RunningConsumer(settings, redis.Redis.from_url(stack.redis_url))
    learner = RunningLearner(settings, redis.Redis.from_url(stack.redis_url))
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    try:
        send(producer, settings.topic_interactions, [orjson.dumps(e) for e in events])
        wait_for(lambda: all_learned(client, settings, events, learner), 60,
                 what="the learner to learn every example")
        yield consumer, learner
    finally:
        producer.close()
        try:
            learner.close()
        finally:
            consumer.close()


def decode(raw: bytes, settings) -> tuple[dict, dict[str, float], bool]:
    """(example, x, y), x rebuilt from the example exactly as the learner does."""
    example = orjson.loads(raw)
    snapshot = {k: float(v) for k, v in example["features"].items()}
    x = featurize(snapshot, float(example["exposure_ts"]), example.get("context") or {},
                  settings.half_lives_s, settings.event_types)
    return example, x, example["label"] == 1


class ItemCTR(base.Classifier):
    """The baseline as a River classifier: it predicts ``x["i_ctr"]`` and learns nothing."""

    def learn_one(self, x, y):
        pass

    def predict_proba_one(self, x):
        return {False: 1.0 - x["i_ctr"], True: x["i_ctr"]}


def river_score(make_model, metric, dataset) -> float:
    return evaluate.progressive_val_score(dataset, make_model(), metric).get()


def exact_auc(dataset) -> float:
    """Progressive ROC AUC of logreg, exact (ROCAUC's 10 thresholds blur low CTRs)."""
    return river_score(pipeline, metrics.RollingROCAUC(window_size=len(dataset)), dataset)


def logreg_params(state) -> dict[str, float]:
    """Every learned number of the learner's logreg: scaler statistics, weights, intercept."""
    scaler, regression = state.models["logreg"].pipeline.steps.values()
    return {**{f"mean:{k}": v for k, v in scaler.means.items()},
            **{f"var:{k}": v for k, v in scaler.vars.items()},
            **{f"w:{k}": v for k, v in regression.weights.items()},
            "intercept": regression.intercept}


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    far = {k: (got[k], want[k]) for k in want if abs(got[k] - want[k]) > TOL}
    assert not far, far


# -- one simulated stream, learned end to end (its examples are replayed further down) ----

@dataclass
class Simulated:
    settings: Settings
    events: list[dict]
    examples: list[bytes]  # the examples topic, in order
    learned: int
    made: int
    published: dict[str, dict[str, float]]  # model -> metrics the learner wrote to Redis
    state: LearnerState  # the (uninterrupted) learner's, at the end


@pytest.fixture(scope="module")
def simulated(stack) -> Simulated:
    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    settings = quick_settings(stack)
    events = simulated_events(3000)
    with learning(stack, settings, events) as (_, learner):
        pass
    found = read_examples(settings.kafka_bootstrap, settings.topic_examples,
                          learner.state.examples)
    return Simulated(settings, events, [orjson.dumps(e) for _, e in found], learner.state.examples,
                     examples_made(client),
                     {name: read_model_metrics(client, name) for name in settings.models},
                     learner.state)


def test_learner_metrics_equal_rivers_progressive_validation(simulated):
    assert simulated.learned == simulated.made == len(simulated.examples) == 3000
    dataset = [decode(raw, simulated.settings)[1:] for raw in simulated.examples]
    assert 50 < sum(y for _, y in dataset) < 2950, "both labels are represented"
    for name, make in (("logreg", pipeline), ("item_ctr", ItemCTR)):
        published = simulated.published[name]
        assert published["examples"] == 3000
        for figure, metric in (("logloss", metrics.LogLoss), ("accuracy", metrics.Accuracy)):
            want = river_score(make, metric(), dataset)
            assert published[figure] == pytest.approx(want, rel=0, abs=TOL), (name, figure)
        # the cumulative AUC is binned by logit: exact up to ties inside a 0.0075 bin
        exact = river_score(make, metrics.RollingROCAUC(window_size=len(dataset)), dataset)
        assert published["roc_auc"] == pytest.approx(exact, abs=2e-3), name


def pre_exposure_ui_clicks(events: list[dict], half_lives) -> dict[str, dict[int, float]]:
    """Per impression: the decayed count of its user's clicks on its item published before
    it, per half-life — what a point-in-time snapshot must hold."""
    clicks: dict[tuple[str, str], list[float]] = {}
    counts = {}
    for e in events:
        pair = (e["user_id"], e["item_id"])
        if e["type"] == "click":
            clicks.setdefault(pair, []).append(e["ts"])
        elif e["type"] == "impression":
            before = clicks.get(pair, ())
            counts[e["event_id"]] = {hl: sum(2 ** (-(e["ts"] - t) / hl) for t in before)
                                     for hl in half_lives}
    return counts


def test_the_click_that_labels_an_example_is_not_in_its_features(simulated):
    settings = simulated.settings
    expected = pre_exposure_ui_clicks(simulated.events, settings.half_lives_s)
    honest, leaky, first_time_clicked = [], [], 0
    for raw in simulated.examples:
        example, x, y = decode(raw, settings)
        before = expected[example["exposure_id"]]
        for hl, count in before.items():
            got = x[f"ui_click_{hl}"]  # zero counts are explicit inputs
            assert got == pytest.approx(math.log1p(count), rel=1e-9, abs=1e-12), \
                example["exposure_id"]
        first_time_clicked += y and not before[3600]
        honest.append(({f"ui_click_{hl}": x[f"ui_click_{hl}"] for hl in before}, y))
        # what a snapshot read after the click would hold: that click counted too
        leaky.append(({f"ui_click_{hl}": math.log1p(count + y) for hl, count in before.items()},
                      y))
    assert first_time_clicked > 20
    assert exact_auc(honest) < 0.9
    assert exact_auc(leaky) > 0.9, "the check would see a leak"


# -- restart -----------------------------------------------------------------------------

def test_a_restarted_learner_resumes_and_learns_every_example_exactly_once(
    stack, redis_conn, producer, start_learner, simulated
):
    records = simulated.examples
    resent = records[1495:1500]  # as after an interactions consumer's crash: re-sent
    stream = records[:1500] + resent + records[1500:]
    settings = quick_settings(stack, checkpoint_every_examples=200, checkpoint_every_s=3600,
                              max_poll_records=50)

    def publish_and_consume(running: RunningLearner, start: int, stop: int) -> None:
        send(producer, settings.topic_examples, stream[start:stop])
        wait_for(lambda: running.state.consumed.get(0) == stop - 1, what=f"offset {stop - 1}")

    first = start_learner(settings)
    publish_and_consume(first, 0, 1500)
    assert first.learner.version >= 1
    first.stop_checkpointing()  # the crash: what it learns from here on is lost
    publish_and_consume(first, 1500, 2000)
    first.close()
    store = checkpoint_store(settings, redis_conn)
    saved = store.meta(store.latest_version())["examples"]
    assert 1200 <= saved <= 1500 < first.state.examples

    second = start_learner(settings)
    assert (second.learner.version, second.state.examples) == (store.latest_version(), saved)
    publish_and_consume(second, 2000, len(stream))
    second.close()
    assert (second.state.examples, second.state.skipped) == (len(records), len(resent))
    assert second.sample("learnloop_examples_duplicate_total") == len(resent)
    assert second.sample("learnloop_model_examples_total", model="logreg") == len(records) - saved
    uninterrupted = simulated.state  # the same examples, in the same order, in one go
    assert_close(logreg_params(second.state), logreg_params(uninterrupted))
    for name in settings.models:
        assert_close(second.state.scores[name].report(), uninterrupted.scores[name].report())


# -- hot swap ----------------------------------------------------------------------------

def flipped(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


def test_scorers_hot_swap_checkpoints_and_champions_and_refuse_tampered_ones(
    stack, redis_conn, producer, monkeypatch
):
    settings = quick_settings(stack, model_reload_s=0.2)
    events = simulated_events(600, seed=5)
    with learning(stack, settings, events) as (consumer, learner):
        wait_for(lambda: learner.learner.since_checkpoint == 0, what="a checkpoint of it all")
        learner.close()
        version = checkpoint_store(settings, redis_conn).latest_version()
        assert version == learner.learner.version >= 1
        served = consumer.consumer.champion

        def serves(name: str) -> bool:
            return (served.served.name == name and served.served.version == version
                    and consumer.sample("learnloop_served_model_version", model=name) == version)

        later = itertools.count(events[-1]["ts"] + 1)

        def score_of(user: str) -> tuple[str, dict]:
            """Expose ``user`` to i1; the model that scored it and the score hash."""
            send(producer, settings.topic_interactions, [orjson.dumps({
                "event_id": f"x-{user}", "ts": next(later), "user_id": user, "item_id": "i1",
                "type": "impression"})])
            return wait_for(lambda: next(((m, s) for m in settings.models
                                          if (s := read_score(redis_conn, m, user, "i1"))), None),
                            10, what=f"a score for {user}")

        wait_for(lambda: serves("item_ctr"), 5, what="the consumer to serve the checkpoint")
        model, score = score_of("p1")
        assert (model, score["version"]) == ("item_ctr", str(version))

        serving.promote(redis_conn, settings, "logreg", "beats the baseline")
        wait_for(lambda: serves("logreg"), 5, what="logreg to be served")
        model, score = score_of("p2")
        assert (model, score["model"], score["version"]) == ("logreg", "logreg", str(version))

        serving.rollback(redis_conn, settings, "too eager")
        wait_for(lambda: serves("item_ctr"), 5, what="item_ctr to be served again")
        assert score_of("p3")[0] == "item_ctr"
        newest, older = serving.history(redis_conn)
        assert {k: newest[k] for k in ("action", "from", "to", "why")} == {
            "action": "rollback", "from": "logreg", "to": "item_ctr", "why": "too eager"}
        assert {k: older[k] for k in ("action", "from", "to", "why")} == {
            "action": "promote", "from": "item_ctr", "to": "logreg", "why": "beats the baseline"}
        assert newest["who"] == older["who"] != ""

        # the newest checkpoint's stored blob gets a byte flipped, as it is written (so the
        # scorer, reloading every 0.2 s, never sees it valid); nothing is written after it
        real_sign = checkpoints.sign
        monkeypatch.setattr(checkpoints, "sign", lambda k, p: flipped(real_sign(k, p)))
        tampered = checkpoint_store(settings, redis_conn).save(learner.state, {})
        monkeypatch.undo()
        assert tampered == version + 1
        wait_for(lambda: consumer.sample("learnloop_checkpoints_refused_total") == 1, 5,
                 what="the tampered checkpoint to be refused")
        assert serves("item_ctr")
        assert score_of("p4")[1]["version"] == str(version)
        refused: list[int] = []
        fresh = ChampionLoader(redis_conn, settings, checkpoint_store(
            settings, redis_conn, lambda v, _why: refused.append(v)))
        assert (fresh.served.version, refused) == (version, [tampered])


def test_a_swapped_out_champion_no_longer_reports_as_served(settings, redis_conn,
                                                           start_consumer):
    running = start_consumer(settings)

    def served_version(model: str) -> float | None:
        return running.registry.get_sample_value("learnloop_served_model_version",
                                                 {"model": model})

    wait_for(lambda: served_version("item_ctr") is not None, what="item_ctr served")
    serving.promote(redis_conn, settings, "logreg", "")
    wait_for(lambda: served_version("logreg") is not None, what="logreg served")
    assert served_version("item_ctr") is None


# -- the models commands --------------------------------------------------------------------

def table_rows(stdout: str) -> dict[str, list[str]]:
    """The rich table's rows by model name: cells without padding."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines()
            if line.startswith("│")]
    return {row[0]: row for row in rows}


def test_models_commands_list_roles_and_counts_promote_roll_back_and_show_history(
    stack, redis_conn, producer, start_learner, simulated
):
    settings = quick_settings(stack)
    send(producer, settings.topic_examples, simulated.examples[:300])
    learner = start_learner(settings)
    wait_for(lambda: learner.state.examples == 300, what="300 examples learned")
    learner.close()
    runner = CliRunner()
    env = {**settings.env(), "LEARNLOOP_TOPIC_EXAMPLES": settings.topic_examples,
           "COLUMNS": "200"}

    def models(*args: str) -> str:
        result = runner.invoke(app, ["models", *args], env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    def roles() -> dict[str, tuple[str, str]]:
        return {name: (row[1], row[4]) for name, row in table_rows(models()).items()}

    assert roles() == {"item_ctr": ("champion", "300"), "logreg": ("challenger", "300")}
    models("promote", "logreg", "--why", "x")
    assert roles() == {"item_ctr": ("baseline", "300"), "logreg": ("champion", "300")}
    models("rollback", "--why", "y")
    assert roles()["item_ctr"][0] == "champion"
    history = [orjson.loads(line) for line in models("history").splitlines()]
    assert [(h["action"], h["to"], h["why"]) for h in history] == [
        ("rollback", "item_ctr", "y"), ("promote", "logreg", "x")]
