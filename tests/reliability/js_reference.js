// The JavaScript side of the canonical-string properties: what Node itself makes of a value.
// One request per stdin line, one JSON reply per stdout line ({"ok": text} or {"error": text}),
// so a single long-lived process answers every example of a test run.
//   stringify  JSON.stringify(JSON.parse(text))             (what the guard signs for a body)
//   form       new URLSearchParams(pairs).toString()        (WHATWG form encoding, pairs in order)
//   rebuild    URLSearchParams over the parsed sent query   (what the guard signs for a GET)
"use strict";
const readline = require("readline");

const ops = {
  stringify: (req) => JSON.stringify(JSON.parse(req.text)),
  form: (req) => new URLSearchParams(req.pairs).toString(),
  rebuild: (req) => new URLSearchParams(Object.fromEntries(new URLSearchParams(req.query))).toString(),
};

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const req = JSON.parse(line);
  let reply;
  try {
    reply = { ok: ops[req.op](req) };
  } catch (err) {
    reply = { error: String(err) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});
