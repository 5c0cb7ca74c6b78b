// Verifies drgreen-poller's request signatures the way the Dr Green guard does (Node crypto).
// stdin: a JSON array of {method, query, params, body, api_key, signature}; stdout: a JSON array
// of {canonical, verified}. The canonical string is rebuilt from what was *sent*, as the server
// rebuilds it: URLSearchParams over the parsed query, else JSON.stringify(params or body).
"use strict";
const crypto = require("crypto");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((req) => {
    let canonical;
    if (req.method === "GET") {
      const parsed = Object.fromEntries(new URLSearchParams(req.query));
      canonical =
        Object.keys(parsed).length > 0
          ? new URLSearchParams(parsed).toString()
          : JSON.stringify(req.params);
    } else {
      canonical = JSON.stringify(JSON.parse(req.body === "" ? "{}" : req.body));
    }
    const pem = Buffer.from(req.api_key, "base64").toString("utf8");
    let verified = false;
    try {
      verified = crypto
        .createVerify("SHA256")
        .update(canonical)
        .verify(pem, Buffer.from(req.signature, "base64"));
    } catch (err) {
      verified = false;
    }
    return { canonical, verified };
  });
  process.stdout.write(JSON.stringify(results));
});
