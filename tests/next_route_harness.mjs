// Serves a compiled Next.js App Router route module's POST over node:http, the way Next.js
// calls it: a web-standard Request in, its Response out. Nothing of the route is replaced.
// argv: the compiled route module (CommonJS). stdout: {"event":"listening","url":...}, then
// whatever the route logs. SIGTERM stops taking requests; the process ends when the route's
// pending work has run.
import http from "node:http";
import { createRequire } from "node:module";

const route = createRequire(import.meta.url)(process.argv[2]);

async function serve(incoming, outgoing) {
  const chunks = [];
  for await (const chunk of incoming) chunks.push(chunk);
  const headers = new Headers();
  for (const [name, value] of Object.entries(incoming.headers)) {
    if (typeof value === "string") headers.set(name, value);
  }
  const request = new Request(`http://${incoming.headers.host}${incoming.url}`, {
    method: incoming.method,
    headers,
    body: Buffer.concat(chunks),
  });
  const response = await route.POST(request);
  outgoing.writeHead(response.status, Object.fromEntries(response.headers));
  outgoing.end(Buffer.from(await response.arrayBuffer()));
}

const server = http.createServer((incoming, outgoing) => {
  serve(incoming, outgoing).catch((error) => {
    console.error(error);
    outgoing.writeHead(500);
    outgoing.end();
  });
});
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  const url = `http://127.0.0.1:${port}/api/drgreen`;
  console.info(JSON.stringify({ event: "listening", url }));
});
process.on("SIGTERM", () => server.close());
