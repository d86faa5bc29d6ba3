"""A real 503: two nodes stopped, so the third has no quorum. The client's
retries (honouring retry-after) carry a write over the outage once the
nodes are back. Last (zz): it stops nodes of the shared cluster."""

import threading
import time

import pytest

import orrery


def test_retry_on_503(cluster, name):
    n1 = orrery.Client(cluster.endpoint(1), token=cluster.token, ca_cert=cluster.ca,
                       retry=orrery.Retry(max_attempts=1))
    n1.kv.put(f"{name}/before", b"1")
    cluster.stop_node(2)
    cluster.stop_node(3)
    restarting, restarted = threading.Event(), threading.Event()
    try:
        # Without retries: the 503 itself, with the server's code and retry-after.
        with pytest.raises(orrery.Unavailable) as e:
            n1.kv.put(f"{name}/k", b"no quorum")
        assert e.value.code in ("unavailable", "outcome_unknown")
        assert e.value.retry_after == 1.0 and not e.value.transport

        def restart():
            time.sleep(3)
            restarting.set()
            cluster.up()
            restarted.set()

        t = threading.Thread(target=restart)
        t.start()
        with orrery.Client(cluster.endpoint(1), token=cluster.token, ca_cert=cluster.ca,
                           retry=orrery.Retry(max_attempts=30, max_total_s=120)) as c:
            rev = c.kv.put(f"{name}/k", b"after the outage")
            assert rev > 0
            assert restarting.is_set(), "the write succeeded without a quorum?"
            assert c.kv.get(f"{name}/k") == b"after the outage"
        t.join()
    finally:
        if not restarted.is_set():
            cluster.up()
        n1.close()
