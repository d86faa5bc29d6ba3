"""KV, cluster status and members, tokens, errors, fail-over between nodes."""

import pytest

import orrery


def test_kv_roundtrip(client, name):
    rev = client.kv.put(f"{name}/colour", b"blue")
    assert isinstance(rev, int) and rev > 0
    assert client.kv.get(f"{name}/colour") == b"blue"
    assert client.kv.get(f"{name}/absent") is None
    e = client.kv.get_entry(f"{name}/colour", consistency="stale")
    assert e.value == b"blue" and e.revision == rev
    # str values are UTF-8
    client.kv.put(f"{name}/greeting", "héllo")
    assert client.kv.get(f"{name}/greeting") == "héllo".encode()

    assert [kv.key for kv in client.kv.list(f"{name}/")] == [f"{name}/colour".encode(), f"{name}/greeting".encode()]
    assert len(client.kv.list(f"{name}/", limit=1)) == 1

    ok = client.kv.cas(f"{name}/colour", b"blue", b"green")
    assert ok.succeeded and ok.revision > rev
    no = client.kv.cas(f"{name}/colour", b"blue", b"red")
    assert not no.succeeded and no.current == b"green"
    assert client.kv.cas(f"{name}/new", None, b"1").succeeded
    assert not client.kv.cas(f"{name}/new", None, b"2").succeeded

    assert client.kv.delete(f"{name}/greeting") is True
    assert client.kv.delete(f"{name}/greeting") is False
    assert client.kv.delete_prefix(f"{name}/") == 2
    assert client.kv.list(f"{name}/") == []


def test_kv_errors_carry_the_server_code(client):
    with pytest.raises(orrery.InvalidArgument) as e:
        client.kv.put(b"", b"x")
    assert e.value.code == "empty_key"
    assert e.value.grpc_code.name == "INVALID_ARGUMENT"
    with pytest.raises(orrery.TooLarge) as e:
        client.kv.put(b"k" * 5000, b"x")
    assert e.value.code == "too_large"
    with pytest.raises(ValueError):
        client.kv.get("k", consistency="sometimes")


def test_tokens_and_permissions(cluster, client, name):
    reader = client.auth.create_token(f"{name}-reader", "reader")
    assert reader.token.startswith("orr_") and reader.info.role == "reader"
    assert reader.info.id in [t.id for t in client.auth.list_tokens()]
    client.kv.put(f"{name}/k", b"v")
    with orrery.Client(cluster.endpoint(2), token=reader.token, ca_cert=cluster.ca) as r:
        assert r.kv.get(f"{name}/k") == b"v"
        with pytest.raises(orrery.PermissionDenied) as e:
            r.kv.put(f"{name}/k", b"w")
        assert e.value.code == "forbidden"
        client.auth.revoke_token(reader.info.id)
        # Revocation reaches every node within about a heartbeat.
        import time
        for _ in range(50):
            try:
                r.kv.get(f"{name}/k")
            except orrery.Unauthenticated as e:
                assert e.code == "unauthenticated"
                break
            time.sleep(0.1)
        else:
            pytest.fail("a revoked token still works")
    with orrery.Client(cluster.endpoint(1), ca_cert=cluster.ca) as anon:
        with pytest.raises(orrery.Unauthenticated):
            anon.kv.get("k")


def test_cluster_status_members_shards_version(client, cluster):
    st = client.cluster.status()
    assert st.cluster_id and not st.insecure and st.unreachable == []
    assert st.groups and all(g.leader in (1, 2, 3) for g in st.groups)
    assert {r.node_id for r in st.groups[0].replicas} == {1, 2, 3}
    m = client.cluster.members()
    assert m.cluster_id == st.cluster_id
    assert sorted((x.id, x.addr, x.state) for x in m.members) == [
        (i, cluster.endpoint(i), "voter") for i in (1, 2, 3)]
    assert m.placement_leader in (1, 2, 3)
    shards = client.cluster.shards()
    assert len(shards) == 8 and all(sorted(s.replicas) == [1, 2, 3] for s in shards)
    v = client.cluster.version()
    assert v.active >= 1 and v.supported >= v.active and len(v.nodes) == 3
    held = client.cluster.set_version(hold=True)
    assert held.held
    assert not client.cluster.set_version(hold=False).held
    # Three nodes hold every shard: balanced, nothing to move.
    rb = client.cluster.rebalance()
    assert rb.balanced and rb.moving == [] and not rb.paused
    assert client.cluster.set_rebalance(True).paused
    assert client.cluster.rebalance().paused
    assert not client.cluster.set_rebalance(False).paused


def test_any_node_and_failover(cluster):
    # A comma-separated list whose first endpoint does not answer: the
    # client moves on to the next.
    dead = "127.0.0.1:1"
    with orrery.Client(f"{dead},{cluster.endpoint(3)}", token=cluster.token, ca_cert=cluster.ca) as c:
        assert c.endpoints == [dead, cluster.endpoint(3)]
        c.kv.put("failover", b"yes")
        assert c.kv.get("failover") == b"yes"
    with orrery.Client(dead, token=cluster.token, ca_cert=cluster.ca,
                       retry=orrery.Retry(max_attempts=2)) as c:
        with pytest.raises(orrery.Unavailable) as e:
            c.kv.get("failover")
        assert e.value.transport


def test_wrong_ca_is_refused(cluster, tmp_path):
    other = tmp_path / "other.crt"
    import subprocess, os
    subprocess.run([os.path.join(cluster.bin, "orreryctl"), "certs", "create-ca", "--certs-dir", str(tmp_path)],
                   check=True, stdout=subprocess.DEVNULL)
    with orrery.Client(cluster.endpoint(1), token=cluster.token, ca_cert=str(tmp_path / "ca.crt"),
                       retry=orrery.Retry(max_attempts=1)) as c:
        with pytest.raises(orrery.Unavailable):
            c.kv.get("k")
