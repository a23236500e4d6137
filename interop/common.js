// What the opaque-ke clients of interop/ share: the password rule and the
// encodings docs/opaque.rst gives a third-party client.
"use strict";

// docs/opaque.rst, Passwords: RFC 8265 OpaqueString, as a line of code.
function prepare(password) {
  return password.replace(/[\u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]/g, " ").normalize("NFC");
}

// @serenity-kit/opaque speaks base64url; the wire, standard base64.
const fromUrl = (s) => Buffer.from(s, "base64url");
const toUrl = (b) => Buffer.from(b).toString("base64url");

// Print the outcome as one JSON line and exit.
function done(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
  process.exit(0);
}

// Call handle(line) for each line the server sends (without its "\n"); the
// connection's failure or end before a result is one.
function onLines(socket, handle) {
  let buffer = "";
  socket.on("data", (data) => {
    buffer += data.toString("latin1");
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      handle(line);
    }
  });
  socket.on("error", (e) => done({ result: "failed", why: String(e) }));
  socket.on("close", () => done({ result: "failed", why: "connection closed" }));
}

module.exports = { prepare, fromUrl, toUrl, done, onLines };
