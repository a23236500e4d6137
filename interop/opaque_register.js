// An opaque-ke client (@serenity-kit/opaque) registering with an invitation
// code over `twistd keyx`'s OPAQUE wire (docs/opaque.rst, The registration
// wire, and The registration messages, byte by byte):
//
//   node opaque_register.js HOST PORT USER CODE PASSWORD [KSF_JSON] [--ignore-mac]
//
// prints one JSON line: {"result": "registered", "exportKey": ...,
// "registrationRecord": ...}, {"result": "refused", "why": ...} (r2's MAC
// does not verify: the connection is closed without r3, as the document
// says), or {"result": "failed", "why": LINE} (the server's answer to r3).
// KSF_JSON (or "") is the keyStretching the daemon's profile fixes, as
// opaque_login.js takes it; the cost r2 carries must be that one.
// --ignore-mac sends r3 even when the MAC does not verify (what a client
// without the code could do), to see the server's own answer.
//
// Written from docs/opaque.rst only: opaque-ke does the RFC 9807
// registration messages, node's crypto the invitation layer.
"use strict";
const crypto = require("crypto");
const net = require("net");
const opaque = require("@serenity-kit/opaque");

const [host, port, user, code, password, ksfJson, flag] = process.argv.slice(2);
const expectedKsf = ksfJson ? JSON.parse(ksfJson) : undefined;
const ignoreMac = flag === "--ignore-mac";

const { prepare, fromUrl, toUrl, done, onLines } = require("./common");

// RFC 4648 section 6 base32, no padding needed for 32 characters (20 bytes).
function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of text) {
    const v = alphabet.indexOf(ch);
    if (v < 0) throw new Error(`not a base32 character: ${ch}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

// The code: drop "-" and whitespace, upper-case, base32-decode: 20 bytes;
// code_hash = SHA-256("twisted-keyx invitation v1" || 0x00 || code).
function codeHash(code) {
  const bytes = base32Decode(code.replace(/[-\s]/g, "").toUpperCase());
  if (bytes.length !== 20) throw new Error("an invitation code is 20 bytes");
  return crypto.createHash("sha256")
    .update(Buffer.concat([Buffer.from("twisted-keyx invitation v1", "ascii"), Buffer.from([0]), bytes]))
    .digest();
}

// prk = HKDF-Extract(salt = client_nonce || server_nonce, IKM = code_hash);
// okm = HKDF-Expand(prk, "twisted-keyx opaque registration v1" || I2OSP(len(user), 2) || user, 96).
function keys(hash, clientNonce, serverNonce, userBytes) {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(userBytes.length);
  const info = Buffer.concat([Buffer.from("twisted-keyx opaque registration v1", "ascii"), length, userBytes]);
  const okm = Buffer.from(crypto.hkdfSync("sha512", hash, Buffer.concat([clientNonce, serverNonce]), info, 96));
  return { serverMacKey: okm.subarray(0, 32), recordKey: okm.subarray(64, 96) };
}

function sameKsf(cost, ksf) {
  const custom = ksf["argon2id-custom"];
  return custom !== undefined && custom.memory === cost.memory
    && custom.iterations === cost.iterations && custom.parallelism === cost.parallelism;
}

opaque.ready.then(() => {
  const pw = prepare(password);
  const hash = codeHash(code);
  const userBytes = Buffer.from(user, "utf8");
  const start = opaque.client.startRegistration({ password: pw });
  const clientNonce = crypto.randomBytes(32);
  const r1 = Buffer.concat([clientNonce, fromUrl(start.registrationRequest)]);
  const socket = net.connect(Number(port), host);
  let step = 0;
  let registered = null;
  socket.on("connect", () => {
    socket.write(`register ${r1.toString("base64")} ${user}\n`);
  });
  onLines(socket, (line) => {
    if (step === 0) {
      step = 1;
      const r2 = Buffer.from(line, "base64");
      if (r2.length !== 172 || r2.toString("base64") !== line) {
        socket.destroy();
        return done({ result: "failed", why: line });
      }
      const serverNonce = r2.subarray(0, 32);
      const response = r2.subarray(32, 96);
      const costBytes = r2.subarray(96, 108);
      const mac = r2.subarray(108, 172);
      const { serverMacKey, recordKey } = keys(hash, clientNonce, serverNonce, userBytes);
      const expected = crypto.createHmac("sha512", serverMacKey)
        .update(Buffer.concat([Buffer.from("server", "ascii"), r1, r2.subarray(0, 108)])).digest();
      const macOk = crypto.timingSafeEqual(mac, expected);
      if (!macOk && !ignoreMac) {
        socket.destroy();
        return done({ result: "refused", why: "the server does not know this invitation code" });
      }
      const cost = {
        memory: costBytes.readUInt32BE(0),
        iterations: costBytes.readUInt32BE(4),
        parallelism: costBytes.readUInt32BE(8),
      };
      if (macOk && expectedKsf !== undefined && !sameKsf(cost, expectedKsf)) {
        socket.destroy();
        return done({ result: "refused", why: `the server asks for another cost: ${JSON.stringify(cost)}` });
      }
      const finish = opaque.client.finishRegistration({
        clientRegistrationState: start.clientRegistrationState,
        registrationResponse: toUrl(response),
        password: pw,
        keyStretching: { "argon2id-custom": cost },
      });
      const record = fromUrl(finish.registrationRecord);
      const cipher = crypto.createCipheriv("aes-256-gcm", recordKey, Buffer.alloc(12, 0));
      cipher.setAAD(crypto.createHash("sha512").update(Buffer.concat([r1, r2])).digest());
      const r3 = Buffer.concat([cipher.update(record), cipher.final(), cipher.getAuthTag()]);
      registered = {
        result: "registered",
        exportKey: finish.exportKey,
        registrationRecord: finish.registrationRecord,
        serverStaticPublicKey: finish.serverStaticPublicKey,
      };
      socket.write(r3.toString("base64") + "\n");
    } else {
      socket.destroy();
      return done(line === "registered" && registered ? registered : { result: "failed", why: line });
    }
  });
});
