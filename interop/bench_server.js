// opaque-ke's server side (@serenity-kit/opaque, WebAssembly) timed in
// CPU for benchmarks/bench_opaque.py: node bench_server.js ROUNDS prints
// {"registration_us": median, "login_us": median, "rounds": N}: the
// server's createRegistrationResponse, and startLogin + finishLogin of one
// login (the client's calls, with a cheap Argon2id, are not counted).
"use strict";
const opaque = require("@serenity-kit/opaque");

const rounds = Number(process.argv[2] || 200);
const keyStretching = { "argon2id-custom": { iterations: 1, memory: 64, parallelism: 1 } };

function cpu(fn) {
  const before = process.cpuUsage();
  const result = fn();
  const spent = process.cpuUsage(before);
  return [result, spent.user + spent.system];
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

opaque.ready.then(() => {
  const serverSetup = opaque.server.createSetup();
  const password = "open sesame";
  const registration = [];
  const login = [];
  let record = null;
  for (let i = 0; i < rounds + 10; i++) {
    const reg = opaque.client.startRegistration({ password });
    const [response, spent] = cpu(() => opaque.server.createRegistrationResponse({
      serverSetup, userIdentifier: "alice", registrationRequest: reg.registrationRequest }));
    if (i >= 10) registration.push(spent);  // the first rounds warm the JIT
    if (record === null) {
      record = opaque.client.finishRegistration({
        password, registrationResponse: response.registrationResponse,
        clientRegistrationState: reg.clientRegistrationState, keyStretching,
      }).registrationRecord;
    }
  }
  for (let i = 0; i < rounds + 10; i++) {
    const start = opaque.client.startLogin({ password });
    const [server, spent1] = cpu(() => opaque.server.startLogin({
      serverSetup, registrationRecord: record, startLoginRequest: start.startLoginRequest,
      userIdentifier: "alice" }));
    const finish = opaque.client.finishLogin({
      clientLoginState: start.clientLoginState, loginResponse: server.loginResponse,
      password, keyStretching });
    const [, spent2] = cpu(() => opaque.server.finishLogin({
      serverLoginState: server.serverLoginState, finishLoginRequest: finish.finishLoginRequest }));
    if (i >= 10) login.push(spent1 + spent2);
  }
  process.stdout.write(JSON.stringify({
    registration_us: median(registration), login_us: median(login), rounds }) + "\n");
});
