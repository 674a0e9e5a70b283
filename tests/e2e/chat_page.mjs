// Headless Chromium drives the chat page at BASE_URL with API_KEY (set by run.sh).
// The server runs with `--chat-cap 2`: two messages get streamed replies, the third gets the
// cap's message.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const base = process.env.BASE_URL;
const key = process.env.API_KEY;
const shots = process.env.SCREENSHOT_DIR || ".";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let failed = false;
try {
  const page = await browser.newPage();
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
  await page.goto(base + "/");
  await page.fill("#api-key", key);
  await page.click("#connect");
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0);
  const model = await page.inputValue("#model");
  assert.ok(model.length > 0, "a model is selected");
  await page.fill("#system", "You are a helpful assistant.");

  // Count how often the reply's text changes while it streams in.
  await page.evaluate(() => {
    window.__updates = 0;
    new MutationObserver(() => { window.__updates++; })
      .observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
  });
  for (const [i, text] of ["Hello there!", "Tell me about the sea."].entries()) {
    await page.fill("#message", text);
    await page.click("#send");
    await page.waitForFunction(
      (n) => document.querySelectorAll('.msg.assistant[data-done="true"]').length === n || document.querySelector(".msg.error"),
      i + 1, { timeout: 120000 });
    const error = await page.$(".msg.error");
    assert.equal(error, null, `message ${i + 1} failed: ${error && await error.textContent()}`);
  }
  const replies = await page.$$eval(".msg.assistant", (els) => els.map((e) => e.textContent));
  assert.equal(replies.length, 2);
  assert.ok(replies.some((r) => r.length > 0), `a reply has text: ${JSON.stringify(replies)}`);
  const updates = await page.evaluate(() => window.__updates);
  assert.ok(updates > 4, `the reply streamed in several updates (saw ${updates})`);
  const status = await page.textContent("#status");
  assert.match(status, /Tokens: \d+ prompt \+ \d+ completion/);
  await page.waitForFunction(() => /Messages: 2 of 2/.test(document.getElementById("usage").textContent));

  await page.fill("#message", "One more?");
  await page.click("#send");
  await page.waitForSelector(".msg.error");
  const err = await page.textContent(".msg.error");
  assert.match(err, /usage cap of 2 messages every 3 hours/);
  assert.deepEqual(external, [], "the page loads nothing from other hosts");
  await page.screenshot({ path: `${shots}/chat_page.png`, fullPage: true });
  console.log(`chat page e2e: ok (model ${model}, ${updates} DOM updates, replies ${JSON.stringify(replies)})`);
} catch (e) {
  failed = true;
  console.error("chat page e2e FAILED:", e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
