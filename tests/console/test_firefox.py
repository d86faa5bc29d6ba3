"""A smoke test of the web console in headless Firefox (Debian's
firefox-esr), driven over Firefox's own Marionette protocol with Mozilla's
Python client (geckodriver is not packaged by Debian): sign in, the
cluster's members and shard leaders, a policy's graph, a wrong token, and
no script or CSP error in the browser console."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import CLUSTER_DIR, node_url
from test_console import GRAPH, POLICY, SHARDS, data  # noqa: F401 (a fixture)

FIREFOX = os.environ.get("FIREFOX", shutil.which("firefox-esr") or shutil.which("firefox") or "")
if not FIREFOX or not shutil.which("certutil"):
    pytest.skip("SKIPPED: no firefox-esr or certutil (apt-get install firefox-esr libnss3-tools)",
                allow_module_level=True)
from marionette_driver.by import By  # noqa: E402
from marionette_driver.errors import NoSuchElementException, StaleElementException  # noqa: E402
from marionette_driver.marionette import Marionette  # noqa: E402

WAIT_S = 30

# Errors the page's own scripts raised or the CSP refused, as Firefox's
# console service records them (chrome context: the content page cannot
# read them, and the CSP forbids an inline onerror hook).
ERRORS_JS = """
return Services.console.getMessageArray()
  .filter(e => e instanceof Ci.nsIScriptError && !e.isFromChromeContext
               && !(e.flags & Ci.nsIScriptError.warningFlag)
               && !(e.flags & Ci.nsIScriptError.infoFlag))
  .map(e => `[${e.category}] ${e.sourceName}:${e.lineNumber} ${e.errorMessage}`);
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ff():
    profile = tempfile.mkdtemp(prefix="orrery-firefox-")
    port = free_port()
    with open(os.path.join(profile, "user.js"), "w") as f:
        f.write(f'user_pref("marionette.port", {port});\n')
    # The test CA is trusted in this profile's NSS database, so TLS is
    # verified for real (acceptInsecureCerts stays false: any other cert
    # at these ports fails the load).
    subprocess.run(["certutil", "-N", "-d", f"sql:{profile}", "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-n", "orrery-test-ca", "-t", "C,,", "-i",
                    str(CLUSTER_DIR / "ca" / "ca.crt"), "-d", f"sql:{profile}"], check=True)
    log = open(os.path.join(profile, "firefox.log"), "w")
    # -remote-allow-system-access: the chrome context, to read the console service.
    proc = subprocess.Popen([FIREFOX, "-marionette", "-headless", "-no-remote",
                             "-remote-allow-system-access", "-profile", profile],
                            stdout=log, stderr=subprocess.STDOUT)
    m = Marionette(host="127.0.0.1", port=port, startup_timeout=60)
    try:
        m.start_session({"acceptInsecureCerts": False})
        m.set_window_rect(width=1280, height=800)
        yield m
    finally:
        try:
            m.delete_session()
        except Exception:
            pass
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def errors(m):
    with m.using_context("chrome"):
        return m.execute_script(ERRORS_JS)


def reset_errors(m):
    with m.using_context("chrome"):
        m.execute_script("Services.console.reset()")


def wait(m, cond, msg):
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end:
        try:
            r = cond()
            if r:
                return r
        except (NoSuchElementException, StaleElementException):
            pass  # the page redraws every 2 s
        time.sleep(0.2)
    body = m.find_element(By.TAG_NAME, "body").text
    raise AssertionError(f"timed out waiting for {msg}; at {m.get_url()} the page showed:\n"
                         f"{body[:3000]}\nbrowser errors: {errors(m)}")


def open_console(m, node=1):
    # Clear the tab's storage on a same-origin page that runs no console.
    # Firefox can bring the signed-in page back from its back-forward
    # cache, so the storage is cleared there and the page loaded again.
    m.navigate(node_url(node) + "/healthz")
    m.execute_script("sessionStorage.clear()")
    m.navigate(node_url(node) + "/ui/")
    m.execute_script("sessionStorage.clear()")
    m.refresh()
    wait(m, lambda: m.find_element(By.ID, "signin").is_displayed(), "the sign-in form")
    reset_errors(m)


def sign_in(m, token, node=1):
    open_console(m, node)
    m.find_elements(By.CSS_SELECTOR, "#signin input")[0].send_keys(token + "\ue007")  # Enter
    wait(m, lambda: m.find_element(By.ID, "shell").is_displayed(), "signed in")


def test_firefox_console_errors_are_seen(ff, root_token):
    """The error check itself can fail: an error thrown in the page and an
    image the CSP refuses are both read back."""
    sign_in(ff, root_token)
    ff.execute_script("window.wrappedJSObject.setTimeout(() => { notAFunction() }, 0);"
                      "const i = document.createElement('img'); i.src = 'https://example.invalid/x.png';"
                      "document.body.appendChild(i)")
    found = wait(ff, lambda: len(errors(ff)) >= 2 and errors(ff), "both errors reported")
    assert any("notAFunction" in e for e in found), found
    assert any("CSP" in e for e in found), found


def test_firefox_wrong_token_shows_an_error_and_nothing_else(ff):
    open_console(ff)
    ff.find_elements(By.CSS_SELECTOR, "#signin input")[0].send_keys("orr_not-a-real-token\ue007")
    err = wait(ff, lambda: (e := ff.find_element(By.ID, "signin-error")).is_displayed() and e,
               "the sign-in error")
    assert "does not accept this token" in err.text
    assert not ff.find_element(By.ID, "shell").is_displayed()
    assert ff.find_element(By.ID, "main").text == ""
    assert ff.execute_script("return sessionStorage.length") == 0
    assert errors(ff) == []


def test_firefox_cluster_shows_three_members_and_every_shard_leader(ff, root_token):
    sign_in(ff, root_token)
    assert ff.execute_script("return location.hash") == "#/cluster"

    def settled():
        members = [e.get_attribute("data-member")
                   for e in ff.find_elements(By.CSS_SELECTOR, "#members tbody tr[data-member]")]
        leaders = [e.text for e in ff.find_elements(By.CSS_SELECTOR, "#shards tbody tr[data-shard] td.leader")]
        return (len(members) == 3 and len(leaders) == SHARDS
                and all(t.startswith("node ") for t in leaders)) and (members, leaders)

    members, leaders = wait(ff, settled, "3 members and a leader per shard")
    assert sorted(members) == ["1", "2", "3"]
    assert set(leaders) <= {"node 1", "node 2", "node 3"}
    assert errors(ff) == []


def test_firefox_policy_graph_is_drawn(ff, root_token, data):
    sign_in(ff, root_token, node=2)
    ff.execute_script("location.hash = arguments[0]", script_args=["#/policies"])
    wait(ff, lambda: ff.find_element(By.CSS_SELECTOR, f"#policies tr[data-policy='{POLICY}'] a"),
         "the policy listed").click()
    wait(ff, lambda: len(ff.find_elements(By.CSS_SELECTOR, "svg.graph g.node")) == len(GRAPH["nodes"]),
         "every node drawn")
    drawn = {g.get_attribute("data-node") for g in ff.find_elements(By.CSS_SELECTOR, "svg.graph g.node")}
    assert drawn == {n["id"] for n in GRAPH["nodes"]}
    assert len(ff.find_elements(By.CSS_SELECTOR, "svg.graph g.edge")) == len(GRAPH["edges"])
    assert errors(ff) == []
