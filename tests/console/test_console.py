"""The web console in headless Chromium against a live secure cluster:
sign in, the cluster's members and shard leaders, a job's live log, a
failed job's exit code, a policy's graph and a run, a vector search, a
wrong token, roles, and every node serving the console."""

import json
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from conftest import Api

SHARDS = 8
POLICY = "console-policy"
COLLECTION = "console-vectors"
GRAPH = {
    "nodes": [
        {"id": "in", "type": "input", "config": {"fields": {"amount": "number", "customer": "string"}}},
        {"id": "size", "type": "transform", "config": {"assign": {"big": "input.amount > 100.0"}}},
        {"id": "ab", "type": "allocation", "config": {"key": "input.customer", "weights": {"a": 90, "b": 10}}},
        {"id": "check", "type": "branch"},
        {"id": "review", "type": "output", "config": {"fields": {"decision": "'review'"}}},
        {"id": "approve", "type": "output", "config": {"fields": {"decision": "'approve'"}}},
    ],
    "edges": [
        {"from": "in", "to": "size"}, {"from": "size", "to": "ab"},
        {"from": "ab", "to": "check", "arm": "a"}, {"from": "ab", "to": "approve", "arm": "b"},
        {"from": "check", "to": "review", "when": "big"}, {"from": "check", "to": "approve"},
    ],
}


# Chromium drops its open connections when the host's network interfaces
# change (other test suites on a CI machine make network namespaces and
# veth pairs); the console follows a dropped log stream again, so such a
# drop is no error of the console.
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
# Chromium asks for /favicon.ico on the JSON page the tests clear the
# storage on (the console's own pages name their icon).
FAVICON = "/favicon.ico - "


def unexpected_errors(console, allowed=()):
    """Browser console errors (CSP violations, script errors, failed
    requests) other than those a test provokes on purpose."""
    allowed = (*allowed, NETWORK_CHANGED, FAVICON)
    return [e for e in console.console_errors() if not any(a in e["message"] for a in allowed)]


@pytest.fixture(scope="module")
def data(api):
    """Queues, a policy and a collection to look at (made through the API)."""
    for q in ({"name": "console"}, {"name": "console-once", "max_attempts": 1}):
        api.call("POST", "/v1/queues", q, ok=(201, 409))
    api.call("POST", "/v1/policies", {"name": POLICY, "description": "size check"}, ok=(201, 409))
    versions = api.call("GET", f"/v1/policies/{POLICY}/versions")["versions"]
    if not versions:
        api.call("POST", f"/v1/policies/{POLICY}/versions", {"graph": GRAPH})
    api.call("POST", "/v1/collections", {"name": COLLECTION, "dim": 3}, ok=(201, 200))
    colors = ["red", "blue", "red", "green", "red", "blue"]
    points = [{"id": i + 1, "vector": [1.0, 0.1 * i, 0.05 * i * i], "payload": {"color": c, "n": i + 1}}
              for i, c in enumerate(colors)]
    api.call("PUT", f"/v1/collections/{COLLECTION}/points", {"points": points})
    return {"points": points}


def test_wrong_token_shows_an_error_and_nothing_else(console):
    console.open()
    field = console.all("#signin input")[0]
    field.send_keys("orr_not-a-real-token\n")
    err = console.wait(lambda d: (e := d.find_element(By.ID, "signin-error")).is_displayed() and e)
    assert "does not accept this token" in err.text
    assert not console.d.find_element(By.ID, "shell").is_displayed()
    assert console.d.find_element(By.ID, "main").text == ""
    assert console.d.execute_script("return sessionStorage.length") == 0
    assert console.d.get_cookies() == []
    console.shot("signin-error")
    # The only failure is the refused whoami.
    assert unexpected_errors(console, ["/v1/auth/whoami"]) == []


@pytest.mark.parametrize("node", [1, 2, 3])
def test_cluster_shows_three_members_and_every_shard_leader(console, root_token, node):
    console.sign_in(root_token, node)
    assert console.d.execute_script("return location.hash") == "#/cluster"
    # The token is in this tab's session storage, never a cookie or URL.
    assert console.d.execute_script("return sessionStorage.getItem('orrery.token')") == root_token
    assert console.d.get_cookies() == []
    assert root_token not in console.d.current_url

    def settled(d):
        # Read at once (the page redraws every 2 s).
        members = [m.get_attribute("data-member")
                   for m in d.find_elements(By.CSS_SELECTOR, "#members tbody tr[data-member]")]
        leaders = [td.text for td in d.find_elements(By.CSS_SELECTOR, "#shards tbody tr[data-shard] td.leader")]
        return (len(members) == 3 and len(leaders) == SHARDS
                and all(t.startswith("node ") for t in leaders)) and (members, leaders)

    members, leaders = console.wait(settled, msg="3 members and a leader per shard")
    assert sorted(members) == ["1", "2", "3"]
    assert set(leaders) <= {"node 1", "node 2", "node 3"}
    assert "ready" in console.text("[data-ready]")
    assert console.text("#who").startswith("root")
    if node == 1:
        console.shot("cluster")
        console.d.set_window_size(420, 860)
        console.shot("cluster-narrow")
        console.d.set_window_size(1280, 800)
    assert unexpected_errors(console) == []


def test_roles_are_offered_only_what_they_may_do(console, api):
    tok = api.call("POST", "/v1/auth/tokens", {"name": "console-reader", "role": "reader"})["token"]
    console.sign_in(tok)
    console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members tbody tr[data-member]")) == 3)
    assert console.all("#members button") == [], "a reader is offered membership actions"
    assert console.all("details.admin") == []
    console.go("#/jobs")
    console.one("#queues")
    assert console.all("#s-kind") == [], "a reader is offered the submit form"
    assert "reader" in console.text("#who")
    assert "null" not in console.text("main"), "a left-out control printed as text"
    # Signing out forgets the token.
    console.d.find_element(By.ID, "signout").click()
    console.wait(lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert console.d.execute_script("return sessionStorage.getItem('orrery.token')") is None


def test_submit_a_job_and_watch_its_log_arrive_live(console, root_token, data):
    console.sign_in(root_token)
    console.go("#/jobs")
    Select(console.one("#s-queue")).select_by_value("console")
    console.one("#s-kind").send_keys("command")
    script = "for i in 1 2 3 4 5 6; do echo line-$i; sleep 1; done"
    console.one("#s-params").send_keys(json.dumps({"argv": ["sh", "-c", script]}))
    console.one("#s-kind").submit()
    console.wait(lambda d: d.execute_script("return location.hash").startswith("#/job/"), msg="job page")
    # The first lines show while the job still runs: streamed, not read at the end.
    console.wait(lambda d: "line-1" in d.find_element(By.ID, "log").text, msg="first log line")
    first_seen = console.text("#log")
    assert "line-6" not in first_seen, f"the whole log arrived at once: {first_seen!r}"
    console.wait(lambda d: d.find_element(By.ID, "job-state").text.startswith("running"), msg="running")
    console.shot("job-live-log", "#runs-h")
    console.wait(lambda d: "line-6" in d.find_element(By.ID, "log").text, msg="last log line")
    console.wait(lambda d: d.find_element(By.ID, "job-state").text == "succeeded", msg="succeeded")
    console.wait(lambda d: d.find_element(By.CSS_SELECTOR, "#runs td.exit-code").text == "0", msg="exit code 0")
    lines = [l for l in console.text("#log").splitlines() if l.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 7)]
    console.go("#/jobs?queue=console")
    console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")) >= 1, msg="jobs listed")
    console.shot("jobs")
    assert unexpected_errors(console) == []


def test_a_failed_jobs_exit_code_shows(console, root_token, api, data):
    job = api.call("POST", "/v1/jobs", {"queue": "console-once", "kind": "command",
                                        "params": {"argv": ["sh", "-c", "echo about to fail; exit 3"]}})
    console.sign_in(root_token, node=2)
    console.go(f"#/job/{job['id']}")
    console.wait(lambda d: d.find_element(By.ID, "job-state").text in ("failed", "dead"), msg="job failed")
    console.wait(lambda d: d.find_element(By.CSS_SELECTOR, "#runs td.exit-code").text == "3", msg="exit code 3")
    assert "exited with code 3" in console.text("#job-error")
    console.wait(lambda d: "about to fail" in d.find_element(By.ID, "log").text)
    console.shot("job-failed", "#runs-h")
    # Filtering the list by state finds it.
    console.go("#/jobs?queue=console-once&state=" + console.text("#job-state"))
    console.one(f"#jobs tr[data-job='{job['id']}']")


def test_cancel_a_running_job_after_confirming(console, root_token, api, data):
    job = api.call("POST", "/v1/jobs", {"queue": "console", "kind": "command",
                                        "params": {"argv": ["sh", "-c", "echo waiting; sleep 60"]}})
    console.sign_in(root_token, node=3)
    console.go(f"#/job/{job['id']}")
    console.wait(lambda d: "waiting" in d.find_element(By.ID, "log").text, msg="the job runs")
    console.one("#cancel").click()
    console.wait(lambda d: d.find_element(By.ID, "confirm").is_displayed(), msg="confirmation")
    console.one("#confirm-ok").click()
    console.wait(lambda d: d.find_element(By.ID, "job-state").text == "cancelled", msg="cancelled")
    assert not console.d.find_element(By.ID, "cancel").is_displayed()
    assert api.call("GET", f"/v1/jobs/{job['id']}")["state"] == "cancelled"
    assert unexpected_errors(console) == []


def test_a_policy_is_drawn_and_runs(console, root_token, data):
    console.sign_in(root_token, node=3)
    console.go("#/policies")
    console.one(f"#policies tr[data-policy='{POLICY}'] a").click()
    console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "svg.graph g.node")) == len(GRAPH["nodes"]),
                 msg="every node drawn")
    drawn = {g.get_attribute("data-node") for g in console.all("svg.graph g.node")}
    assert drawn == {n["id"] for n in GRAPH["nodes"]}
    assert len(console.all("svg.graph g.edge")) == len(GRAPH["edges"])
    labels = {t.text for t in console.all("svg.graph .edge-label")}
    assert {"a (weight 90)", "b (weight 10)", "when big", "default"} <= labels, labels
    # Laid out in layers: the input leftmost, the outputs rightmost.
    xs = {g.get_attribute("data-node"): g.rect["x"] for g in console.all("svg.graph g.node")}
    assert xs["in"] < xs["size"] < xs["ab"] < xs["check"] < xs["review"]
    console.shot("policy", "#graph-h")
    box = console.one("#run-input")
    box.clear()
    box.send_keys(json.dumps({"amount": 500, "customer": "c-7"}))
    box.find_element(By.XPATH, "ancestor::form").submit()
    out = console.wait(lambda d: (e := d.find_elements(By.CSS_SELECTOR, "#run-output pre")) and e[0].text)
    decision = json.loads(out)["decision"]
    assert decision in ("review", "approve")
    assert console.text("#run-status") == "succeeded"
    visited = {g.get_attribute("data-node") for g in console.all("svg.graph g.node.visited")}
    assert {"in", "size", "ab", decision} <= visited, visited
    assert console.all("svg.graph g.edge.taken"), "no edge of the path highlighted"
    console.shot("policy-run", "#graph-h")
    console.go(f"#/policies?policy={POLICY}")
    console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-run]")) >= 1)
    assert unexpected_errors(console) == []


def test_search_a_collection(console, root_token, data):
    console.sign_in(root_token, node=2)
    console.go("#/vectors")
    row = console.one(f"#collections tr[data-collection='{COLLECTION}']")
    assert "3" in row.text
    Select(console.one("#v-collection")).select_by_value(COLLECTION)
    console.one("#v-point").send_keys("1")
    console.one("#v-filter").send_keys(json.dumps({"must": [{"key": "color", "match": "red"}]}))
    console.one("#v-k").clear()
    console.one("#v-k").send_keys("10")
    console.one("#v-point").submit()
    rows = console.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#results tr[data-point]"), msg="results")
    ids = [r.get_attribute("data-point") for r in rows]
    assert ids[0] == "1", ids
    assert sorted(ids) == ["1", "3", "5"], "the filter kept only red points"
    assert all('"red"' in r.text for r in rows)
    console.shot("vectors", "#search-h")
    # A pasted vector works too.
    console.one("#v-by-vector").click()
    console.one("#v-vector").send_keys("[1.0, 0.5, 1.25]")
    console.one("#v-filter").clear()
    console.one("#v-point").submit()
    console.wait(lambda d: d.find_element(By.CSS_SELECTOR, "#results caption").text.startswith("6 results"))
    assert unexpected_errors(console) == []


def test_gpus_page_shows_the_inventory(console, root_token, api):
    console.sign_in(root_token)
    console.go("#/gpus")
    gpus = api.call("GET", "/v1/gpus")["gpus"]
    if gpus:
        console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-gpu]")) == len(gpus))
    else:
        assert "No node reports a GPU" in console.text("#no-gpus")
    console.shot("gpus")
    assert unexpected_errors(console) == []


def test_static_files_carry_the_security_headers(root_token):
    import urllib.request
    from conftest import CLUSTER_DIR, node_url
    import ssl
    ctx = ssl.create_default_context(cafile=str(CLUSTER_DIR / "ca" / "ca.crt"))
    with urllib.request.urlopen(node_url(2) + "/ui/app.js", context=ctx) as r:
        h = r.headers
        assert h["Content-Type"].startswith("text/javascript")
        assert "default-src 'self'" in h["Content-Security-Policy"]
        assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer"
    # The API behind the console still wants a token.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(node_url(2) + "/v1/cluster", context=ctx)
    assert e.value.code == 401
    assert Api(root_token, node=3).call("GET", "/v1/auth/whoami")["role"] == "admin"


@pytest.fixture
def spare_node():
    """A fourth node, started and not yet a member (its pid file next to
    the others', so that scripts/test-console.sh stops it in any case)."""
    from conftest import CLUSTER_DIR, PORT_BASE
    import os
    import subprocess
    bin_dir = os.environ.get("ORRERY_BIN", "target/debug")
    certs = CLUSTER_DIR / "certs" / "n4"
    if not (certs / "node.crt").exists():
        subprocess.run([f"{bin_dir}/orreryctl", "certs", "create-node", "--certs-dir", str(CLUSTER_DIR / "ca"),
                        "--out", str(certs), "127.0.0.1", "localhost"], check=True, capture_output=True)
    addr, peer = f"127.0.0.1:{PORT_BASE + 4}", f"127.0.0.1:{PORT_BASE + 104}"
    log = open(CLUSTER_DIR / "n4.log", "ab")
    p = subprocess.Popen([f"{bin_dir}/orrery", "serve", "--id", "4", "--listen", addr, "--peer-listen", peer,
                          "--data-dir", str(CLUSTER_DIR / "n4"), "--certs-dir", str(certs)],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    (CLUSTER_DIR / "n4.pid").write_text(str(p.pid))
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=str(CLUSTER_DIR / "ca" / "ca.crt"))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"https://localhost:{PORT_BASE + 4}/healthz", context=ctx, timeout=1)
            break
        except OSError:
            assert p.poll() is None, "node 4 exited; see n4.log"
            time.sleep(0.1)
    yield addr, peer
    p.terminate()
    p.wait(timeout=10)


def test_admin_adds_and_removes_a_member_after_confirming(console, root_token, spare_node):
    addr, peer = spare_node
    console.sign_in(root_token)
    console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members tr[data-member]")) == 3)
    console.one("details.admin summary").click()
    console.one("#add-id").send_keys("4")
    console.one("#add-addr").send_keys(addr)
    console.one("#add-peer").send_keys(peer)
    console.one("#add-learner").click()
    console.one("#add-id").submit()
    # A confirmation first; nothing changes until it is given.
    dialog = console.wait(lambda d: (e := d.find_element(By.ID, "confirm")).is_displayed() and e)
    assert "Add node 4" in dialog.text
    console.one("#confirm-ok").click()

    def member_4(d):
        rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#members tr[data-member='4']")]
        return rows and rows[0]

    row = console.wait(member_4, timeout=60, msg="node 4 listed")
    assert "learner" in row
    # Cancelling the removal keeps it.
    console.one("#members tr[data-member='4'] button.danger").click()
    console.wait(lambda d: d.find_element(By.ID, "confirm").is_displayed())
    console.d.find_element(By.CSS_SELECTOR, "#confirm button[value=cancel]").click()
    time.sleep(2.5)  # a refresh later
    assert console.all("#members tr[data-member='4']")
    console.one("#members tr[data-member='4'] button.danger").click()
    console.wait(lambda d: d.find_element(By.ID, "confirm").is_displayed())
    console.one("#confirm-ok").click()
    console.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members tr[data-member]")) == 3
                 and not d.find_elements(By.CSS_SELECTOR, "#members tr[data-member='4']"),
                 timeout=90, msg="node 4 removed")
    assert unexpected_errors(console) == []
