"""opaque-ke, the Rust reference implementation of OPAQUE, as the npm
package @serenity-kit/opaque (WebAssembly) under node, for the interop
tests: interop/package.json and its lock file, installed by ``npm ci`` in
interop/ (.ci/run does).

Without node or interop/node_modules the tests are skipped, unless
KEYX_INTEROP_REQUIRED is set (.ci/run sets it): then they fail."""

import base64
import json
import os
import shutil
import subprocess

from twisted.trial.unittest import SkipTest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTEROP = os.path.join(ROOT, "interop")


def require_node():
    """The node executable, or SkipTest (a failure in CI) saying what is missing."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not os.path.isdir(os.path.join(INTEROP, "node_modules", "@serenity-kit", "opaque")):
        missing = "interop/node_modules is missing: run 'npm ci' in interop/"
    if missing is None:
        return node
    if os.environ.get("KEYX_INTEROP_REQUIRED"):
        raise AssertionError(f"the OPAQUE interop tests cannot run: {missing}")
    raise SkipTest(missing)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OpaqueKe:
    """One node process running interop/opaque_peer.js: :meth:`call`
    runs one of its functions (stateless) and returns its result."""

    def __init__(self):
        node = require_node()
        self.process = subprocess.Popen(
            [node, "opaque_peer.js"], cwd=INTEROP, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, encoding="utf-8")
        ready = self._read()
        if ready != {"ok": "ready"}:
            raise AssertionError(f"opaque_peer.js did not start: {ready}")

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError("opaque_peer.js ended")
        return json.loads(line)

    def call(self, fn, **args):
        self.process.stdin.write(json.dumps({"fn": fn, "args": args}) + "\n")
        self.process.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise OpaqueKeError(reply["error"])
        return reply["ok"]

    def close(self):
        self.process.stdin.close()
        self.process.wait(30)
        self.process.stdout.close()


class OpaqueKeError(Exception):
    """opaque-ke threw."""


def _run_script(script, args, timeout):
    node = require_node()
    done = subprocess.run([node, script, *args], cwd=INTEROP, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(f"{script} failed: {done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def login_over_the_wire(host, port, user, password, key_stretching=None, timeout=120):
    """interop/opaque_login.js: an opaque-ke client's login to a daemon;
    its one JSON line."""
    args = [host, str(port), user, password]
    if key_stretching is not None:
        args.append(json.dumps(key_stretching))
    return _run_script("opaque_login.js", args, timeout)


def register_over_the_wire(host, port, user, code, password, key_stretching=None,
                           ignore_mac=False, timeout=120):
    """interop/opaque_register.js: an opaque-ke client's registration with
    an invitation code (docs/opaque.rst, The registration wire); its one
    JSON line.  ``ignore_mac`` sends r3 even when r2's MAC does not verify
    (to see the server's own refusal)."""
    args = [host, str(port), user, code, password,
            "" if key_stretching is None else json.dumps(key_stretching)]
    if ignore_mac:
        args.append("--ignore-mac")
    return _run_script("opaque_register.js", args, timeout)
