"""Fixtures of the console's browser tests: a secure 3-node cluster that
scripts/test-console.sh started (its directory and port base in the
environment), the REST API with the root token for setting up data, and
headless Chromium (Debian's, driven by Selenium) that trusts exactly the
cluster's node certificates."""

import base64
import hashlib
import json
import os
import pathlib
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                        TimeoutException)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CLUSTER_DIR = pathlib.Path(os.environ.get("ORRERY_CLUSTER_DIR", ".orrery-console"))
PORT_BASE = int(os.environ.get("ORRERY_PORT_BASE", "20000"))
SHOTS = os.environ.get("ORRERY_CONSOLE_SCREENSHOTS")  # a directory, or unset
WAIT_S = 30


def node_url(i):
    return f"https://localhost:{PORT_BASE + i}"


class Api:
    """The REST API over TLS (the cluster CA) with a bearer token."""

    def __init__(self, token, node=1):
        self.token = token
        self.base = node_url(node)
        self.ctx = ssl.create_default_context(cafile=str(CLUSTER_DIR / "ca" / "ca.crt"))

    def call(self, method, path, body=None, ok=(200, 201, 202)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        if status not in ok:
            raise AssertionError(f"{method} {path}: {status} {text}")
        return json.loads(text) if text else None


@pytest.fixture(scope="session")
def root_token():
    return (CLUSTER_DIR / "root.token").read_text().strip()


@pytest.fixture(scope="session")
def api(root_token):
    return Api(root_token)


def spki_hash(cert):
    """Chromium's --ignore-certificate-errors-spki-list form of a
    certificate: base64 of the SHA-256 of its public key (DER)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="session")
def driver():
    # Chromium has no API to add a CA for one run; instead it trusts the
    # public keys of exactly these node certificates (still real TLS:
    # a different key at those ports fails the handshake).
    pins = ",".join(spki_hash(p) for p in sorted(CLUSTER_DIR.glob("certs/n*/node.crt")))
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,800", f"--ignore-certificate-errors-spki-list={pins}",
              "--disable-extensions", "--no-first-run"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    d = webdriver.Chrome(options=opts, service=service)
    d.set_window_size(1280, 800)
    yield d
    d.quit()


class Console:
    """The console in the browser: sign in, navigate, wait, screenshot."""

    def __init__(self, driver):
        self.d = driver

    def wait(self, cond, timeout=WAIT_S, msg=""):
        try:
            # Pages redraw as they refresh: an element read mid-redraw is
            # stale, and the condition is simply tried again.
            return WebDriverWait(self.d, timeout, poll_frequency=0.2,
                                 ignored_exceptions=(NoSuchElementException,
                                                     StaleElementReferenceException)).until(cond, msg)
        except TimeoutException:
            # What the page showed, to tell a slow cluster from a broken page.
            body = self.d.find_element(By.TAG_NAME, "body").text
            logs = self.d.get_log("browser")
            raise AssertionError(f"timed out waiting for {msg or cond}; at {self.d.current_url} "
                                 f"the page showed:\n{body[:3000]}\nbrowser log: {logs}") from None

    def open(self, node=1):
        # A fresh tab: nothing signed in from an earlier test. The storage
        # is cleared on a page of the same origin that runs no console
        # (a running console would notice and be signed out mid-request).
        self.d.get(node_url(node) + "/healthz")
        self.d.execute_script("sessionStorage.clear()")
        self.d.get(node_url(node) + "/ui/")
        self.wait(EC.visibility_of_element_located((By.ID, "signin")))

    def sign_in(self, token, node=1):
        self.open(node)
        # The form's first text or password input, submitted with Enter.
        first = self.d.find_element(By.CSS_SELECTOR, "#signin input[type=password], #signin input[type=text]")
        first.send_keys(token, Keys.ENTER)
        self.wait(EC.visibility_of_element_located((By.ID, "shell")), msg="signed in")

    def go(self, hash_):
        self.d.execute_script("location.hash = arguments[0]", hash_)

    def all(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def one(self, css):
        return self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, css)), msg=css)

    def text(self, css):
        """The element's text, read again if a redraw replaced it."""
        return self.wait(lambda d: (d.find_element(By.CSS_SELECTOR, css).text,), msg=css)[0]

    def shot(self, name, scroll_to=None):
        if SHOTS:
            os.makedirs(SHOTS, exist_ok=True)
            if scroll_to:
                self.d.execute_script("document.querySelector(arguments[0]).scrollIntoView()", scroll_to)
            time.sleep(0.3)  # let the last refresh paint
            self.d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    def console_errors(self):
        return [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
def console(driver):
    c = Console(driver)
    driver.set_window_size(1280, 800)
    driver.get_log("browser")  # drop what earlier tests left
    return c
