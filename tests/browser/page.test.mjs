// The reviewer page of `vlinder serve` in a real headless Chromium: a reviewer picks the claimed
// species (and a date), uploads photos and sees each verdict with its probabilities and flags.
// Needs target/release/vlinder (cargo build --release) and Chromium (CHROMIUM, default
// /usr/bin/chromium); run with `npm test` in this folder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, symlinkSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repo, vlinder, startServer, launchChromium } from "./server.mjs";

// The repository's sample, so that a clone without ../shared runs this test too.
const sample = join(repo, "assets/sample");
const species = ["anthocharis_cardamines", "gonepteryx_rhamni"];

function trainTinyModel(dir) {
  const photos = join(dir, "photos");
  for (const name of species) {
    const source = join(sample, name);
    mkdirSync(join(photos, name), { recursive: true });
    for (const file of readdirSync(source).sort().slice(0, 12)) {
      symlinkSync(join(source, file), join(photos, name, file));
    }
  }
  const model = join(dir, "model");
  const observations = join(sample, "manifest.jsonl");
  execFileSync(vlinder, ["train", "--data", photos, "--epochs", "1", "--image-size", "24", "--no-augment",
    "--observations", observations, "--out", model], { stdio: "ignore" });
  return { model, photo: join(photos, species[1], readdirSync(join(photos, species[1]))[0]) };
}

test("a reviewer uploads photos and sees verdicts with probabilities", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vlinder-page-"));
  const { model, photo } = trainTinyModel(dir);
  const { server, address } = startServer(["--model", model]);
  t.after(() => server.kill("SIGTERM"));
  const base = await address;
  const browser = await launchChromium();
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  await page.waitForSelector("#species option", { state: "attached" });
  const options = await page.locator("#species option").allTextContents();
  assert.deepEqual(options, species.map((s) => s.replace(/_/g, " ")));
  await page.selectOption("#species", species[1]);

  await page.setInputFiles("#files", photo);
  const verdict = page.locator(".result .verdict").first();
  await verdict.waitFor({ timeout: 30000 });
  const label = await verdict.textContent();
  assert.match(label, /^(agrees|disagrees|uncertain|unknown)/);
  // An `unknown` photo is explained, with the ranking still shown below.
  const notes = await page.locator(".result .note").count();
  assert.equal(notes, label.startsWith("unknown") ? 1 : 0);
  if (notes) assert.match(await page.locator(".result .note").textContent(), /Not one of the species this model knows/);
  assert.equal(await page.locator(".result .bar").count(), 2, "one probability bar per species");
  const widths = await page.locator(".result .bar").evaluateAll((bars) => bars.map((b) => parseFloat(b.style.width)));
  assert.ok(Math.abs(widths[0] + widths[1] - 200) <= 2, `bars share 200px: ${widths}`);

  // A file that is not a photo gets the server's message, and the page keeps working.
  const bad = join(dir, "notes.jpg");
  writeFileSync(bad, "<html>not a photo</html>");
  await page.setInputFiles("#files", bad);
  const error = page.locator(".result .verdict.error").first();
  await error.waitFor({ timeout: 30000 });
  assert.match(await error.textContent(), /not a usable photo/);
  // An orange-tip dated in August is flagged, with the photo alone's probabilities beside.
  await page.selectOption("#species", species[0]);
  await page.fill("#date", "2021-08-15");
  await page.setInputFiles("#files", photo);
  const flag = page.locator(".result .flag").first();
  await flag.waitFor({ timeout: 30000 });
  assert.match(await flag.textContent(), /^outside flight period: .*% of its records are from month 8/);
  assert.match(await page.locator(".result").first().textContent(), /photo alone/);
  await page.screenshot({ path: join(repo, "target", "reviewer-page.png"), fullPage: true });
});
