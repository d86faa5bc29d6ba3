"""The README's complete example, run as it stands against the cluster."""

import os
import re
import subprocess
import sys

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def example() -> str:
    with open(README) as f:
        text = f.read()
    m = re.search(r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", text, re.S)
    assert m, "README.md has no complete example"
    return m.group(1)


def test_readme_example(cluster):
    env = dict(os.environ, ORRERY_ENDPOINT=cluster.endpoint(2), ORRERY_TOKEN=cluster.token,
               ORRERY_CA_CERT=cluster.ca)
    for _ in range(2):  # it says it may run again
        r = subprocess.run([sys.executable, "-c", example()], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=120)
        assert r.returncode == 0, r.stdout
        assert "nearest: 1" in r.stdout and "run " in r.stdout
