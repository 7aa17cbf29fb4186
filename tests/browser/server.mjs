// What the browser tests share: the vlinder binary, starting `vlinder serve` on a free port, and
// launching Debian's Chromium headless with the network it must not use switched off.
import { spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const repo = resolve(import.meta.dirname, "../..");
export const vlinder = join(repo, "target/release/vlinder");

// `vlinder serve ARGS --addr 127.0.0.1:0`; `address` resolves to its http:// base URL.
export function startServer(args) {
  const server = spawn(vlinder, ["serve", ...args, "--addr", "127.0.0.1:0"]);
  const address = new Promise((ok, fail) => {
    let log = "";
    server.stderr.on("data", (chunk) => {
      log += chunk.toString();
      const found = /on (http:\/\/\S+)/.exec(log);
      if (found) ok(found[1]);
    });
    server.on("exit", (code) => fail(new Error(`vlinder serve exited with ${code}: ${log}`)));
  });
  return { server, address };
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
