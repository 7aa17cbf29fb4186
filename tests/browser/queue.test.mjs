// The review queue's page in a real headless Chromium, against SQLite and (with
// VLINDER_POSTGRES, as CI sets it) PostgreSQL: a validator signs in, filters, decides by
// keyboard, is told when another validator decided first and replaces that knowingly; an admin
// exports the decisions. Needs target/release/vlinder and Chromium, as page.test.mjs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, symlinkSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repo, vlinder, startServer, launchChromium } from "./server.mjs";

const sample = join(repo, "assets/sample");
const species = ["anthocharis_cardamines", "celastrina_argiolus", "gonepteryx_rhamni"];

// A tiny model on the repository's sample, with the prior of its photos' dates and places, and a
// records CSV of 13 records (every third claim wrong; one of them, a holly blue, in December; one
// with two photos; one with the id ".."),
// imported into the database at `url`, with a validator and an admin.
function prepare(dir, url) {
  const photos = join(dir, "photos");
  const lines = ["id,photo,species,date"];
  for (const [s, name] of species.entries()) {
    mkdirSync(join(photos, name), { recursive: true });
    const files = readdirSync(join(sample, name)).filter((f) => f.endsWith(".jpg")).sort().slice(0, 12);
    for (const file of files) symlinkSync(join(sample, name, file), join(photos, name, file));
    for (const [i, file] of files.slice(0, 4).entries()) {
      const claimed = i % 3 === 0 ? species[(s + 1) % 3] : name;
      const month = s === 0 && i === 3 ? "12" : "05";
      // One record, gon-1, has two photos of its butterfly.
      const photo = s === 2 && i === 1 ? `${join(photos, name, file)}|${join(photos, name, files[5])}` : join(photos, name, file);
      lines.push(`${name.slice(0, 3)}-${i},${photo},${claimed},2021-${month}-${String(10 + i).padStart(2, "0")}`);
    }
  }
  // A record whose id a URL path cannot carry: a browser takes ".." for the folder above.
  lines.push(`..,${join(photos, species[0], readdirSync(join(photos, species[0])).sort()[6])},${species[1]},2021-05-01`);
  const model = join(dir, "model");
  const observations = join(sample, "manifest.jsonl");
  execFileSync(vlinder, ["train", "--data", photos, "--epochs", "1", "--image-size", "24", "--no-augment", "--observations", observations, "--out", model], { stdio: "ignore" });
  const records = join(dir, "records.csv");
  writeFileSync(records, lines.join("\n") + "\n");
  execFileSync(vlinder, ["queue", "import", "--model", model, "--database", url, "--date-column", "date", "--photos-root", "/", records], { stdio: "ignore" });
  for (const [name, role] of [["anna", "validator"], ["bram", "admin"]]) {
    execFileSync(vlinder, ["user", "add", name, "--role", role, "--database", url], { input: `${name} has a long password\n`, stdio: ["pipe", "ignore", "ignore"] });
  }
  return model;
}

// Signs in outside the browser, as another validator's browser would.
async function signIn(base, name) {
  const answer = await fetch(`${base}/v1/session`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name, password: `${name} has a long password` }),
  });
  assert.equal(answer.status, 200);
  return { cookie: answer.headers.get("set-cookie").split(";")[0], csrf: (await answer.json()).csrf };
}

function databases(dir) {
  const urls = [{ name: "SQLite", url: join(dir, "queue.db") }];
  const server = process.env.VLINDER_POSTGRES;
  if (server) {
    const database = `vlinder_browser_${process.pid}`;
    execFileSync("psql", [server, "-qc", `DROP DATABASE IF EXISTS ${database}`]);
    execFileSync("psql", [server, "-qc", `CREATE DATABASE ${database}`]);
    urls.push({ name: "PostgreSQL", url: server.replace(/\/[^/]*$/, `/${database}`) });
  }
  return urls;
}

test("validators work through the queue by keyboard and are told of each other's decisions", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vlinder-queue-"));
  const browser = await launchChromium();
  t.after(() => browser.close());
  for (const { name, url } of databases(dir)) {
    await t.test(name, async () => {
      const model = prepare(join(dir, name), url);
      const { server, address } = startServer(["--model", model, "--database", url]);
      try {
        const base = await address;
        // A session check that gets no answer still offers the sign-in form, with the reason.
        const offline = await browser.newContext({ locale: "en-GB" });
        const cut = await offline.newPage();
        await cut.route("**/v1/session", (route) => route.abort());
        await cut.goto(`${base}/queue`);
        await cut.waitForSelector("#signin:not([hidden])");
        assert.equal(await cut.textContent("#signin-error"), "The server did not answer; try again.");
        await offline.close();
        const context = await browser.newContext({ locale: "en-GB" });
        const page = await context.newPage();
        await page.goto(`${base}/queue`);
        // A wrong password is refused with a message; the right one opens the queue.
        await page.fill("#name", "anna");
        await page.fill("#password", "not her password");
        await page.click("#signin button");
        await page.waitForFunction(() => document.querySelector("#signin-error").textContent !== "");
        assert.equal(await page.textContent("#signin-error"), "Wrong name or password.");
        await page.fill("#password", "anna has a long password");
        await page.click("#signin button");
        await page.waitForSelector("#rows tr[data-id]");
        assert.equal(await page.locator("#rows tr[data-id]").count(), 13);
        assert.equal(await page.locator("#export").isHidden(), true, "validators do not export");
        // Common names in the filter, with the scientific name as written, not the folder's spelling.
        const options = await page.locator("#f-claimed option").allTextContents();
        assert.ok(options.includes("Orange-tip (Anthocharis cardamines)"), options.join(" | "));

        // Filter by claimed species, then by date.
        await page.selectOption("#f-claimed", species[2]);
        await page.waitForFunction(() => document.querySelectorAll("#rows tr[data-id]").length === 4);
        const claimed = await page.locator("#rows tr[data-id] td:nth-child(2)").allTextContents();
        assert.ok(claimed.every((c) => c.startsWith("Brimstone")), claimed.join(" | "));
        await page.selectOption("#f-claimed", "");
        await page.fill("#f-from", "2021-05-12");
        await page.dispatchEvent("#f-from", "change");
        await page.waitForFunction(() => document.querySelectorAll("#rows tr[data-id]").length === 6);
        await page.fill("#f-from", "");
        await page.dispatchEvent("#f-from", "change");
        await page.waitForFunction(() => document.querySelectorAll("#rows tr[data-id]").length === 13);

        // By keyboard: c confirms the first record and moves on, 2 corrects the second.
        await page.locator("#detail h2").waitFor();
        const first = await page.textContent("#detail h2");
        await page.keyboard.press("c");
        await page.waitForFunction((id) => document.querySelector(`#rows tr[data-id="${id}"] .decided`).textContent !== "", first);
        await page.waitForFunction((id) => document.querySelector("#detail h2") && document.querySelector("#detail h2").textContent !== id, first);
        const second = await page.textContent("#detail h2");
        await page.keyboard.press("2");

        await page.waitForFunction((id) => document.querySelector(`#rows tr[data-id="${id}"] .decided`).textContent !== "", second);
        await page.waitForFunction((id) => document.querySelector("#detail h2").textContent !== id, second);

        // bram decides the record anna is looking at; her decision is refused and she is told.
        const third = await page.textContent("#detail h2");
        const bram = await signIn(base, "bram");
        const his = await fetch(`${base}/v1/record/decisions?id=${encodeURIComponent(third)}`, {
          method: "POST",
          headers: { "Content-Type": "application/json", Cookie: bram.cookie, "X-CSRF-Token": bram.csrf },
          body: JSON.stringify({ decision: "confirm", replaces: 0 }),
        });
        assert.equal(his.status, 201);
        await page.keyboard.press("x");
        await page.locator("#conflict").waitFor();
        assert.match(await page.textContent("#conflict"), /Already decided by bram: Confirm/);
        // r replaces his decision knowingly.
        await page.keyboard.press("r");
        await page.waitForFunction((id) => document.querySelector("#detail h2").textContent !== id, third);
        const history = await (await fetch(`${base}/v1/record?id=${encodeURIComponent(third)}`, { headers: { Cookie: bram.cookie } })).json();
        assert.deepEqual(history.history.map((d) => [d.validator, d.decision]), [["bram", "confirm"], ["anna", "cannot_tell"]]);

        // The holly blue claimed in December is flagged, whatever its photo shows.
        await page.click('#rows tr[data-id="ant-3"]');
        await page.locator("#flags").waitFor();
        assert.equal(await page.textContent("#flags"), "Flags: outside its flight period");

        // A record with two photos shows both with their answers; a click shows one large.
        await page.click('#rows tr[data-id="gon-1"]');
        await page.waitForFunction(() => document.querySelectorAll("#photos figure img").length === 2);
        const captions = await page.locator("#photos figcaption").allTextContents();
        assert.ok(captions.every((c) => c.length > 0), captions.join(" | "));
        // Both thumbnails load (a 404 leaves naturalWidth 0).
        await page.waitForFunction(() => [...document.querySelectorAll("#photos figure img")].every((i) => i.complete && i.naturalWidth > 0));
        await page.locator("#photos figure").nth(1).click();
        assert.match(await page.getAttribute("#detail > img", "src"), /\/v1\/record\/photos\/1\?id=gon-1$/);
        // The record with id ".." opens like any other, its photo too.
        await page.click('#rows tr[data-id=".."]');
        await page.waitForFunction(() => document.querySelector("#detail h2").textContent === "..");
        await page.waitForFunction(() => { const i = document.querySelector("#detail > img"); return i.complete && i.naturalWidth > 0; });
        await page.click('#rows tr[data-id="ant-3"]');
        await page.locator("#flags").waitFor();

        // The switch turns the page into Dutch.
        await page.click("#lang");
        assert.equal(await page.textContent("#signout"), "Uitloggen");
        assert.equal(await page.textContent("#flags"), "Signalen: buiten de vliegtijd");
        await page.screenshot({ path: join(repo, "target", `queue-page-${name}.png`), fullPage: true });

        // A key pressed while the next record's detail is on its way decides nothing, rather
        // than the record shown before; the late detail is shown and then decided.
        const ids = await page.locator("#rows tr[data-id]").evaluateAll((rows) => rows.map((r) => r.dataset.id));
        const [before, after] = ids.slice(-2);
        await page.click(`#rows tr[data-id="${before}"]`);
        await page.waitForFunction((id) => document.querySelector("#detail h2").textContent === id, before);
        const held = (url) => url.pathname === "/v1/record" && url.searchParams.get("id") === after;
        await page.route(held, async (route) => {
          await new Promise((done) => setTimeout(done, 1000));
          await route.continue();
        });
        await page.keyboard.press("j");
        await page.keyboard.press("x");
        await page.waitForFunction((id) => document.querySelector("#detail h2").textContent === id, after);
        await page.unroute(held);
        const decidedText = (id) => page.textContent(`#rows tr[data-id="${id}"] .decided`);
        assert.equal(await decidedText(before), "", "the record shown before is not decided");
        assert.equal(await decidedText(after), "");
        await page.keyboard.press("x");
        await page.waitForFunction((id) => document.querySelector(`#rows tr[data-id="${id}"] .decided`).textContent !== "", after);
        assert.equal(await decidedText(before), "");

        // The admin exports every record with the latest decisions.
        const admin = await browser.newContext({ locale: "nl-NL" });
        const adminPage = await admin.newPage();
        await adminPage.goto(`${base}/queue`);
        assert.equal(await adminPage.getAttribute("html", "lang"), "nl");
        await adminPage.fill("#name", "bram");
        await adminPage.fill("#password", "bram has a long password");
        await adminPage.click("#signin button");
        await adminPage.waitForSelector("#export:not([hidden])");
        const csv = await adminPage.evaluate(async () => (await fetch("/v1/export")).text());
        const lines = csv.trim().split("\n");
        assert.equal(lines.length, 14);
        assert.ok(lines.some((l) => l.startsWith(`${first},`) && l.includes(",confirm,,anna,")), csv);
        assert.ok(lines.some((l) => l.startsWith(`${third},`) && l.includes(",2,cannot_tell,,anna,")), csv);
        await admin.close();
        await context.close();
      } finally {
        server.kill("SIGTERM");
      }
    });
  }
});
