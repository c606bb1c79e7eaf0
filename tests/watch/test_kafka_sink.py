"""The Kafka sink (confluent-kafka) on a real Tansu broker, read back with kafka-python.

- Entries leave the outbox only after the broker's ack: with the broker stopped (SIGSTOP) they stay; after it
  comes back every one arrives, each camera's in order.
- SASL logins through a SCRAM front (tests/peers/sasl_front.py: scramp's SCRAM server, and PLAIN, then the
  bytes piped to Tansu unchanged), because Tansu 0.6.0 cannot hold credentials (tests/peers/tansu.py): with
  SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN a wrong password is refused (SASL_AUTHENTICATION_FAILED), nothing is
  acked and the entries wait in the outbox; a new sink with the right password delivers every one, read back by
  a kafka-python consumer that logs in through the front too; the front counted the logins and refusals, and
  the password appears in no log record. A client without SASL, or with a mechanism the front does not offer,
  gets nothing through.
- SASL against Tansu itself with ``--authentication``: Tansu 0.6.0 offers SCRAM only, so a SCRAM-SHA-512 client
  reaches the SCRAM exchange (and is refused as an unknown user: this build stores no SCRAM credentials at all),
  a PLAIN client is refused at the handshake; nothing is acked, the entries wait, the password is in no log.
- TLS through a stunnel4 front (Tansu 0.6.0 serves no TLS itself) with a throw-away certificate: a sink given
  another CA fails the handshake ("certificate verify failed") and acks nothing; the same entries, sent again
  with the right CA, all arrive and are read by a kafka-python consumer that verifies the same CA; a plaintext
  client of the front gets nothing through.
- MessageReceiver JSON: parsed as the seed writes it, Password never in the API form.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from agent.reporting.kafka import KafkaSettings, KafkaSink, Routed
from agent.reporting.sinks import SinkRunner
from agent.storage.outbox import Outbox, OutboxEntry
from agent.watch.model import WatchError, parse_message_receiver
from tests.peers import wait_until
from tests.peers.sasl_front import SaslFront
from tests.peers.tansu import Consumer, Tansu, TlsFront, self_signed

SECRET = "pw-that-must-not-be-logged"


def _sink(settings: KafkaSettings, topic: str = "t") -> KafkaSink:
    def route(e: OutboxEntry) -> Routed:
        return Routed(settings, topic, e.device_id, e.body.encode())

    return KafkaSink("kafka", route, max_inflight=50)


@pytest.mark.peer
def test_ack_after_broker_and_order_per_camera(tmp_path: Path) -> None:
    broker = Tansu(tmp_path).start()
    outbox = Outbox(tmp_path / "o.db", ["kafka"])
    sink = _sink(KafkaSettings(servers=(broker.bootstrap,)))
    runner = SinkRunner(outbox, sink, idle_s=0.05)
    consumer = Consumer(broker.bootstrap, ["t"])
    try:
        runner.start()
        for i in range(30):
            outbox.enqueue("target", f"cam{i % 3}", f"id{i}", json.dumps({"n": i, "cam": f"cam{i % 3}"}))
        assert wait_until(lambda: outbox.count("kafka") == 0, 30)
        broker.pause()
        for i in range(30, 90):
            outbox.enqueue("target", f"cam{i % 3}", f"id{i}", json.dumps({"n": i, "cam": f"cam{i % 3}"}))
        # while the broker is stopped nothing new is acknowledged, so the entries are still in the outbox
        assert wait_until(lambda: sink.produced >= 80, 10)
        assert outbox.count("kafka") == 60
        broker.resume()
        assert wait_until(lambda: outbox.count("kafka") == 0, 60)
        assert wait_until(lambda: len({v["n"] for v in consumer.values("t")}) == 90, 30)
        for cam in ("cam0", "cam1", "cam2"):
            seen = [v["n"] for v in consumer.values("t") if v["cam"] == cam]
            firsts = list(dict.fromkeys(seen))
            assert firsts == sorted(firsts), (cam, seen)
        assert sink.acked >= 90 and sink.dropped == 0
    finally:
        consumer.close()
        runner.stop(3)
        outbox.close()
        broker.stop()


@pytest.mark.peer
@pytest.mark.parametrize(
    ("mechanism", "refusal"), [("SCRAM-SHA-512", "unknown-user"), ("PLAIN", "mechanism")]
)
def test_sasl_against_tansu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mechanism: str, refusal: str
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = Tansu(tmp_path, authentication=True).start()
    outbox = Outbox(tmp_path / "o.db", ["kafka"])
    settings = KafkaSettings(
        servers=(broker.bootstrap,),
        sasl_mechanism=mechanism,
        username="watcher",
        password=SECRET,
        delivery_timeout_ms=3000,
    )
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    sink = _sink(settings)
    runner = SinkRunner(outbox, sink, idle_s=0.05)
    try:
        runner.start()
        outbox.enqueue("target", "cam0", "id0", json.dumps({"n": 0}))
        assert wait_until(lambda: sink.failed >= 1, 30)
        link = next(iter(sink._links.values()))
        assert wait_until(lambda: refusal in link.last_error, 10), link.last_error
        assert outbox.count("kafka") == 1 and sink.acked == 0
    finally:
        runner.stop(3)
        outbox.close()
        broker.stop()
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert any(refusal in r.getMessage() for r in caplog.records) or refusal == "mechanism"


@pytest.mark.peer
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_sasl_login_through_a_scram_front(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mechanism: str
) -> None:
    """Tansu 0.6.0 cannot hold credentials, so the front (scramp's SCRAM server) checks them before Tansu."""
    caplog.set_level(logging.DEBUG)
    front = SaslFront({"watcher": SECRET, "reader": "reader-pw"})
    broker = Tansu(tmp_path, advertised_port=front.port).start()
    front.start(broker.port)
    outbox = Outbox(tmp_path / "o.db", ["kafka"])
    consumer: Consumer | None = None

    def settings(password: str, **kw: int) -> KafkaSettings:
        return KafkaSettings(
            servers=(front.bootstrap,), sasl_mechanism=mechanism, username="watcher", password=password, **kw
        )

    # a wrong password: refused by the front, nothing acked, the entries wait
    sink = _sink(settings("not-the-" + SECRET, delivery_timeout_ms=3000))
    runner = SinkRunner(outbox, sink, idle_s=0.05)
    try:
        runner.start()
        for i in range(20):
            outbox.enqueue("target", f"cam{i % 2}", f"id{i}", json.dumps({"n": i}))
        assert wait_until(lambda: sink.failed >= 1, 30)
        link = next(iter(sink._links.values()))
        assert wait_until(lambda: "Authentication failed" in link.last_error, 10), link.last_error
        assert outbox.count("kafka") == 20 and sink.acked == 0
        assert front.refusals and not front.logins
        assert {(m, u) for m, u, _ in front.refusals} == {(mechanism, "watcher")}
        runner.stop(3)
        # the right password (a new sink): every waiting entry arrives, read by a consumer that logs in too
        sink = _sink(settings(SECRET))
        runner = SinkRunner(outbox, sink, idle_s=0.05)
        runner.start()
        assert wait_until(lambda: outbox.count("kafka") == 0, 30)
        consumer = Consumer(front.bootstrap, ["t"], sasl=(mechanism, "reader", "reader-pw"))
        cons = consumer
        assert wait_until(lambda: {v["n"] for v in cons.values("t")} == set(range(20)), 30), cons.errors[-3:]
        assert sink.acked >= 20 and sink.dropped == 0
        assert (mechanism, "watcher") in front.logins and (mechanism, "reader") in front.logins
        assert {m for m, _ in front.logins} == {mechanism} and front.errors == []
        # librdkafka speaks SaslAuthenticate v1, kafka-python v2 (flexible): both framings were served
        assert {v for k, v in front.versions if k == 36} >= {1, 2}, front.versions
    finally:
        if consumer is not None:
            consumer.close()
        runner.stop(3)
        outbox.close()
        front.stop()
        broker.stop()
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert any("refused" in r.getMessage() for r in caplog.records if r.name == "tests.sasl_front")


@pytest.mark.peer
def test_the_front_lets_nothing_through_before_a_login(tmp_path: Path) -> None:
    """A client without SASL, or with a mechanism the front does not offer, reaches no broker."""
    front = SaslFront({"watcher": SECRET}, mechanisms=["SCRAM-SHA-512"])
    broker = Tansu(tmp_path, advertised_port=front.port).start()
    front.start(broker.port)
    outbox = Outbox(tmp_path / "o.db", ["kafka"])
    plain = KafkaSettings(
        servers=(front.bootstrap,), sasl_mechanism="PLAIN", username="watcher", password=SECRET
    )
    sinks = [
        _sink(replace(s, delivery_timeout_ms=3000))
        for s in (KafkaSettings(servers=(front.bootstrap,)), plain)
    ]
    errors: list[str] = []
    try:
        outbox.enqueue("target", "cam0", "id0", json.dumps({"n": 0}))
        for sink in sinks:
            runner = SinkRunner(outbox, sink, idle_s=0.05)
            runner.start()
            try:
                assert wait_until(lambda: sink.failed >= 1, 30)  # noqa: B023
                errors.append(next(iter(sink._links.values())).last_error)
            finally:
                runner.stop(3)
        assert outbox.count("kafka") == 1 and not front.logins and sinks[1].acked == 0
        whys = [why for _, _, why in front.refusals]
        assert any("before a login" in w for w in whys) and "mechanism not offered" in whys, whys
        assert "Unsupported SASL mechanism" in errors[1], errors
    finally:
        outbox.close()
        front.stop()
        broker.stop()


def test_message_receiver_as_the_seed_writes_it() -> None:
    seed = (
        '{   "MessageQueue": "Kafka",   "Config": {     "BootstrapServers": "127.0.0.1:9092,127.0.0.2:9092",'
        '     "Topic": "topic_for_put_message",     "Authorization": "SASL",     "SASL": {       "Type": "PLAIN",'
        '       "Username": "username_for_put_message",       "Password": "password_for_put_message"     }   } }'
    )
    r = parse_message_receiver(seed)
    assert r.servers == ("127.0.0.1:9092", "127.0.0.2:9092") and r.topic == "topic_for_put_message"
    assert r.sasl_type == "PLAIN" and r.username == "username_for_put_message"
    shown = r.to_json(with_password=False)
    assert "Password" not in shown["Config"]["SASL"] and "password_for_put_message" not in str(r)
    assert parse_message_receiver(seed.replace('"PLAIN"', '"SCRAM"')).sasl_type == "SCRAM-SHA-512"
    assert parse_message_receiver(seed.replace('"PLAIN"', '"SCRAM-SHA-256"')).sasl_type == "SCRAM-SHA-256"
    tls = json.loads(seed)
    tls["Config"]["TLS"] = {"CaLocation": "/etc/ssl/ca.pem"}
    assert parse_message_receiver(json.dumps(tls)).tls is True
    for bad, field in (
        (seed.replace('"Kafka"', '"RabbitMQ"'), "MessageQueue"),
        (seed.replace("127.0.0.2:9092", "127.0.0.2"), "BootstrapServers"),
        (seed.replace('"topic_for_put_message"', '"a topic"'), "Topic"),
        (seed.replace('"SASL",', '"OAUTH",'), "Authorization"),
        (seed.replace('"PLAIN"', '"GSSAPI"'), "SASL.Type"),
        ("{not json", "MessageReceiver"),
    ):
        with pytest.raises(WatchError) as info:
            parse_message_receiver(bad)
        assert field in info.value.field


@pytest.mark.peer
def test_tls_verified_against_the_ca_and_refused_with_another(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "broker")
    other, _ = self_signed(tmp_path, "other")
    front = TlsFront(tmp_path, cert, key)
    broker = Tansu(tmp_path, advertised_port=front.port).start()
    front.start(broker.port)
    outbox = Outbox(tmp_path / "o.db", ["kafka"])
    consumer: Consumer | None = None
    # a CA that did not sign the broker's certificate: the handshake fails, nothing is acked, the entries wait
    wrong = KafkaSettings(
        servers=(front.bootstrap,), tls=True, ca_location=str(other), delivery_timeout_ms=3000
    )
    sink = _sink(wrong)
    runner = SinkRunner(outbox, sink, idle_s=0.05)
    try:
        runner.start()
        for i in range(20):
            outbox.enqueue("target", f"cam{i % 2}", f"id{i}", json.dumps({"n": i}))
        assert wait_until(lambda: sink.failed >= 1, 30)
        link = next(iter(sink._links.values()))
        assert "certificate verify failed" in link.last_error, link.last_error
        assert outbox.count("kafka") == 20 and sink.acked == 0
        runner.stop(3)
        # the right CA: every waiting entry arrives, read back by a consumer that verifies the same CA
        sink = _sink(KafkaSettings(servers=(front.bootstrap,), tls=True, ca_location=str(cert)))
        runner = SinkRunner(outbox, sink, idle_s=0.05)
        runner.start()
        assert wait_until(lambda: outbox.count("kafka") == 0, 30)
        consumer = Consumer(front.bootstrap, ["t"], ca_file=cert)
        cons = consumer
        assert wait_until(lambda: {v["n"] for v in cons.values("t")} == set(range(20)), 30), cons.errors[-3:]
        assert sink.acked >= 20 and sink.dropped == 0
    finally:
        if consumer is not None:
            consumer.close()
        runner.stop(3)
        outbox.close()
        front.stop()
        broker.stop()


@pytest.mark.peer
def test_the_broker_is_reached_only_through_tls(tmp_path: Path) -> None:
    """The front is what the clients talk to: a plaintext client of its port gets no answer."""
    cert, key = self_signed(tmp_path)
    front = TlsFront(tmp_path, cert, key)
    broker = Tansu(tmp_path, advertised_port=front.port).start()
    front.start(broker.port)
    outbox = Outbox(tmp_path / "o.db", ["kafka"])
    sink = _sink(KafkaSettings(servers=(front.bootstrap,), delivery_timeout_ms=3000))
    runner = SinkRunner(outbox, sink, idle_s=0.05)
    try:
        runner.start()
        outbox.enqueue("target", "cam0", "id0", json.dumps({"n": 0}))
        assert wait_until(lambda: sink.failed >= 1, 30)
        assert outbox.count("kafka") == 1 and sink.acked == 0
    finally:
        runner.stop(3)
        outbox.close()
        front.stop()
        broker.stop()
