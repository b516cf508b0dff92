"""The PostgreSQL cluster (docker-compose.ha.yml) comes up healthy, serves the API, keeps its
doors shut, and survives the crash of its leader's PostgreSQL. One cluster for the module; the
failover test runs last, because it changes the leader."""

from __future__ import annotations

import json
import time
import uuid

import httpx

from tests.ha.cluster import Cluster, healthy
from tests.stack.compose import create_product, create_user

# Seconds within which every API request must be answered (no hang), failover or not.
ANSWER_BOUND_S = 15.0
# Generous on a loaded 2-core host: Patroni notices the crash within loop_wait (5 s), the standby
# promotes, HAProxy sees the new leader within 2 s. make bench will record the real figures.
FAILOVER_BOUND_S = 90.0


def _order(http: httpx.Client, user: int, product: int, key: str | None = None) -> httpx.Response:
    """One item of `product`; with an Idempotency-Key, so that a retry never places a second."""
    return http.post(
        "/api/orders",
        json={"user_id": user, "items": [{"product_id": product, "quantity": 1}]},
        headers={"Idempotency-Key": key or str(uuid.uuid4())},
    )


def _assert_unavailable_answer(response: httpx.Response) -> None:
    """What a client may see while the leader is away: 503 JSON with Retry-After, never a 500.
    (A request cut off while committing says so, and invites the keyed retry.)"""
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) > 0, response.headers
    code = response.json()["error"]["code"]
    assert code in ("database_unavailable", "commit_outcome_unknown"), response.text


def test_the_cluster_comes_up_with_one_leader_and_a_synchronous_standby(cluster: Cluster) -> None:
    members = cluster.wait_members(healthy, timeout=60, what="leader + sync standby + replica")
    leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    standby = next(m["Member"] for m in members if m["Role"] == "Sync Standby")
    # PostgreSQL's own view on the leader: one synchronous and one asynchronous stream, both
    # as the replication role.
    rows = cluster.node_psql(
        leader, "SELECT usename, application_name, sync_state FROM pg_stat_replication "
        "ORDER BY sync_state", database="postgres",
    ).splitlines()  # fmt: skip
    states = {row.split("|")[1]: (row.split("|")[0], row.split("|")[2]) for row in rows}
    assert states[standby] == ("replicator", "sync"), rows
    assert sorted(s for _, s in states.values()) == ["async", "sync"], rows
    assert cluster.node_psql(leader, "SHOW synchronous_commit") == "on"


def test_make_cluster_status_shows_the_leader_and_the_sync_standby(cluster: Cluster) -> None:
    result = cluster.make_target("cluster-status")
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    assert "Leader" in table and "Sync Standby" in table, table
    for node in ("patroni1", "patroni2", "patroni3"):
        assert node in table, table


def test_an_order_placed_through_the_api_is_readable_and_on_the_synchronous_standby(
    cluster: Cluster,
) -> None:
    with cluster.http() as http:
        user = create_user(http)
        product = create_product(http, stock=5, price_cents=300)
        created = _order(http, user, product)
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        order = http.get(f"/api/orders/{order_id}")
        assert order.status_code == 200, order.text
        assert order.json()["total_cents"] == 300
    # Acknowledged means on the synchronous standby too: its replay may trail by a moment, but
    # the commit's WAL was flushed there before the API answered.
    standby = next(m["Member"] for m in cluster.members() if m["Role"] == "Sync Standby")
    deadline = time.monotonic() + 10
    while cluster.node_psql(standby, f"SELECT count(*) FROM orders WHERE id = {order_id}") != "1":
        assert time.monotonic() < deadline, f"order {order_id} not replayed on {standby}"
        time.sleep(0.2)


def test_no_cluster_port_is_published_and_replication_uses_scram(cluster: Cluster) -> None:
    for service in ("etcd1", "etcd2", "etcd3", "patroni1", "patroni2", "patroni3", "haproxy"):
        container = cluster.container(service)
        bindings = container.attrs["HostConfig"]["PortBindings"] or {}
        assert bindings == {}, (service, bindings)
    leader = cluster.leader()
    assert leader is not None
    verifier = cluster.node_psql(
        leader, "SELECT rolpassword FROM pg_authid WHERE rolname = 'replicator'", "postgres"
    )
    assert verifier.startswith("SCRAM-SHA-256$"), "the replication role has no SCRAM verifier"
    rules = cluster.node_psql(
        leader, "SELECT auth_method FROM pg_hba_file_rules WHERE 'replication' = ANY(database) "
        "AND type = 'host' AND auth_method <> 'reject'", "postgres",
    )  # fmt: skip
    assert rules.splitlines() == ["scram-sha-256"], rules


def test_etcd_and_patronis_rest_api_refuse_clients_without_credentials(cluster: Cluster) -> None:
    code, out = cluster.exec(
        "etcd1", "etcdctl", "--endpoints=http://etcd2:2379", "get", "--prefix", "/service/"
    )
    assert code != 0, f"etcd answered without credentials: {out}"
    assert "user name is empty" in out or "permission denied" in out, out
    # An unsafe endpoint (PATCH /config, setting ttl to the value it has) from another node,
    # without and with Patroni's credentials.
    probe = (
        "import base64, sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request('http://patroni2:8008/config', data=b'{\"ttl\": 30}',\n"
        "                             method='PATCH')\n"
        "if len(sys.argv) > 1:\n"
        "    token = base64.b64encode(('patroni:' + open(sys.argv[1]).read().strip()).encode())\n"
        "    req.add_header('Authorization', 'Basic ' + token.decode())\n"
        "try:\n"
        "    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(exc.code)\n"
    )
    code, out = cluster.exec("patroni1", "python3", "-c", probe)
    assert (code, out.strip()) == (0, "401"), out
    code, out = cluster.exec(
        "patroni1", "python3", "-c", probe, "/run/secrets/patroni_api_password"
    )
    assert (code, out.strip()) == (0, "200"), out


def test_a_crashed_leader_is_replaced_and_the_api_serves_again_with_only_503_meanwhile(
    cluster: Cluster,
) -> None:
    members = cluster.wait_members(healthy, timeout=60, what="a healthy cluster before the crash")
    old_leader = next(m["Member"] for m in members if m["Role"] == "Leader")
    standby = next(m["Member"] for m in members if m["Role"] == "Sync Standby")
    answers: list[tuple[int, str]] = []
    with cluster.http(timeout=ANSWER_BOUND_S + 5) as http:
        user = create_user(http)
        product = create_product(http, stock=1000)
        before = _order(http, user, product)
        assert before.status_code == 201, before.text

        # kill -9 of the postmaster, as a crash would: Patroni must fail over, not restart it.
        code, out = cluster.exec(
            old_leader, "bash", "-c", 'kill -KILL "$(head -1 "$PGDATA/postmaster.pid")"',
            user="postgres",
        )  # fmt: skip
        assert code == 0, out
        crashed = time.monotonic()

        # One logical order, retried with its key until it is placed.
        key, new_leader, served = str(uuid.uuid4()), None, False
        while not served:
            assert time.monotonic() - crashed < FAILOVER_BOUND_S, (
                f"no order served {FAILOVER_BOUND_S} s after the crash; leader {new_leader}; "
                f"answers {answers[-5:]}"
            )
            started = time.monotonic()
            response = _order(http, user, product, key)
            assert time.monotonic() - started < ANSWER_BOUND_S
            answers.append((response.status_code, response.text[:200]))
            if response.status_code == 201:
                new_leader = cluster.leader()
                served = new_leader not in (None, old_leader)
            else:
                _assert_unavailable_answer(response)
                time.sleep(min(float(response.headers["Retry-After"]), 1.0))

        assert new_leader == standby, f"{new_leader} promoted, not the sync standby {standby}"
        # The order acknowledged before the crash is on the new leader, and the retried one was
        # placed exactly once.
        got = http.get(f"/api/orders/{before.json()['id']}")
        assert got.status_code == 200, got.text
        assert http.get(f"/api/products/{product}").json()["stock"] == 1000 - 2
    statuses = {status for status, _ in answers}
    assert statuses <= {201, 503}, answers
    print(json.dumps({"failover_s": round(time.monotonic() - crashed, 1), "answers": len(answers),
                      "unavailable": sum(1 for s, _ in answers if s == 503)}))  # fmt: skip
