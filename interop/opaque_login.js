// An opaque-ke client (@serenity-kit/opaque) logging in to `twistd keyx`
// over its OPAQUE wire (docs/opaque.rst) in the rfc9807 profile with an
// empty context: node opaque_login.js HOST PORT USER PASSWORD [KSF_JSON]
// prints one JSON line: {"result": "ok", "sessionKey": ..., "exportKey": ...} or
// {"result": "failed", "why": ...}.  Only what docs/opaque.rst tells a
// third-party client is used: standard base64 lines, the password
// prepared as its Passwords section says.
"use strict";
const net = require("net");
const opaque = require("@serenity-kit/opaque");

const [host, port, user, password, ksfJson] = process.argv.slice(2);
const keyStretching = ksfJson ? JSON.parse(ksfJson) : undefined;

const { prepare, fromUrl, toUrl, done, onLines } = require("./common");

opaque.ready.then(() => {
  const pw = prepare(password);
  const start = opaque.client.startLogin({ password: pw });
  const socket = net.connect(Number(port), host);
  let step = 0;
  let sessionKey = null;
  let exportKey = null;
  socket.on("connect", () => {
    const ke1 = fromUrl(start.startLoginRequest).toString("base64");
    socket.write(`${ke1} ${user}\n`);
  });
  onLines(socket, (line) => {
    if (step === 0) {
      step = 1;
      if (line === "authentication failed") return done({ result: "failed", why: line });
      const finish = opaque.client.finishLogin({
        clientLoginState: start.clientLoginState,
        loginResponse: toUrl(Buffer.from(line, "base64")),
        password: pw,
        keyStretching,
      });
      if (!finish) {
        // Wrong password or unknown user: as our client, let the server say so.
        socket.write(Buffer.alloc(64, 0).toString("base64") + "\n");
      } else {
        sessionKey = finish.sessionKey;
        exportKey = finish.exportKey;
        socket.write(fromUrl(finish.finishLoginRequest).toString("base64") + "\n");
      }
    } else {
      socket.destroy();
      return done(line === "ok" && sessionKey
        ? { result: "ok", sessionKey, exportKey }
        : { result: "failed", why: line });
    }
  });
});
