// opaque-ke (@serenity-kit/opaque, WebAssembly) as a line-oriented JSON
// peer for tests/test_opaque_interop.py: each line of stdin is
// {"fn": "client.startLogin", "args": {...}}; each line of stdout is
// {"ok": result} or {"error": "message"}.  Every value is opaque-ke's own
// (base64url strings, no padding); the functions are stateless.
"use strict";
const opaque = require("@serenity-kit/opaque");
const readline = require("readline");

// docs/opaque.rst, Passwords: what a third-party client does to a password.
const { prepare: preparePassword } = require("./common");
const prepare = (a) => preparePassword(a.password);

const functions = {
  "prepare": prepare,
  "server.createSetup": () => opaque.server.createSetup(),
  "server.getPublicKey": (a) => opaque.server.getPublicKey(a.serverSetup),
  "server.createRegistrationResponse": (a) => opaque.server.createRegistrationResponse(a),
  "server.startLogin": (a) => opaque.server.startLogin(a),
  "server.finishLogin": (a) => opaque.server.finishLogin(a),
  "client.startRegistration": (a) => opaque.client.startRegistration(a),
  "client.finishRegistration": (a) => opaque.client.finishRegistration(a),
  "client.startLogin": (a) => opaque.client.startLogin(a),
  "client.finishLogin": (a) => opaque.client.finishLogin(a) ?? null,
};

opaque.ready.then(() => {
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    let reply;
    try {
      const { fn, args } = JSON.parse(line);
      if (!(fn in functions)) throw new Error(`unknown function ${fn}`);
      reply = { ok: functions[fn](args || {}) };
    } catch (e) {
      reply = { error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  });
  process.stdout.write(JSON.stringify({ ok: "ready" }) + "\n");
});
