"""``voipflow enforce --backend flowspec`` as a process: Kafka in, a real gobgpd router out.

The point starts its own gobgpd; SIGKILL of the point must take the speaker
with it (the router then withdraws the routes), and a restarted point must
announce exactly the rules in force.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.enforcement.points.bgp import Router, wait_until
from tests.enforcement.points.pointproc import PointProcess
from tests.enforcement.points.rulesdata import FeedbackReader, RulesTopic, make_rule

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


@pytest.fixture
def router(tmp_path: Path) -> Iterator[Router]:
    if shutil.which("gobgpd") is None:
        pytest.skip("gobgpd is not installed (apt-get install gobgpd)")
    r = Router(tmp_path)
    try:
        yield r
    finally:
        r.close()


def test_flowspec_point_announces_survives_sigkill_and_reannounces_what_is_in_force(
    router: Router, kafka_bootstrap: str, kafka_topic_factory: Any, tmp_path: Path
) -> None:
    rules = kafka_topic_factory(configs={"cleanup.policy": "compact"}, prefix="rules")
    feedback = kafka_topic_factory(prefix="feedback")
    topic = RulesTopic(kafka_bootstrap, rules)
    fb = FeedbackReader(kafka_bootstrap, feedback)
    point = PointProcess(
        "flowspec",
        kafka_bootstrap,
        rules,
        feedback,
        tmp_path,
        VOIPFLOW_ENFORCE_BGP_PEER=f"127.0.0.1:{router.bgp_port}",
    )
    try:
        point.start()
        topic.publish(make_rule("r-a", target={"prefixes": ["198.51.100.0/24"]}))
        topic.publish(
            make_rule(
                "r-b", action="throttle", rate_kbps=800, target={"prefixes": ["203.0.113.0/24"]}
            )
        )
        fb.status("r-b", "applied", timeout_s=60)
        wait_until(lambda: len(router.routes()) == 4)
        assert router.routes()["[destination: 203.0.113.0/24][protocol: ==udp]"] == "rate 100000"

        point.kill9()
        # The speaker died with the point: the router withdrew everything.
        wait_until(lambda: router.routes() == {})
        topic.withdraw("r-a")
        topic.publish(make_rule("r-c", target={"prefixes": ["192.0.2.0/24"]}))

        point.start()
        fb.status("r-c", "applied", timeout_s=60)
        want = {
            "[destination: 203.0.113.0/24][protocol: ==udp]": "rate 100000",
            "[source: 203.0.113.0/24][protocol: ==udp]": "rate 100000",
            "[destination: 192.0.2.0/24][protocol: ==udp]": "discard",
            "[source: 192.0.2.0/24][protocol: ==udp]": "discard",
        }
        wait_until(lambda: router.routes() == want)
        assert point.alive()
    finally:
        point.stop()
        topic.close()
        fb.close()
