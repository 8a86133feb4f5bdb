// Drives Debian's Chromium for Switchboard's end-to-end tests.
//
// The tests are Rust (tests/e2e/src/browser.rs); Playwright is a Node
// library. This process is the bridge: it reads one JSON request per line on
// stdin and writes one JSON reply per line on stdout,
//
//   {"id":1,"cmd":"launch","fake_audio":"/tmp/speech.wav"}
//   {"id":1,"ok":true,"value":{"browser":1,"version":"156.0…"}}
//   {"id":2,"cmd":"click","page":1,"selector":"#answer","timeout":5000}
//   {"id":2,"ok":false,"error":"click \"#answer\": timed out after 5000 ms: …"}
//
// Requests are served concurrently (two agents' pages can be driven at once)
// and answered in the order they finish; the id ties a reply to its request.
// stdout carries replies only; every log line goes to stderr, which the Rust
// side keeps in the test's log directory. A failing command is an error
// reply, never a crash. When stdin closes (the test finished, or its process
// died) every browser is closed, its profile removed, and the driver exits.
//
// Each `launch` starts its own Chromium with a fresh profile and its own fake
// microphone (a WAV file): two launches are two agents on two computers.
// Playwright downloads no browser here; it starts /usr/bin/chromium (or the
// `executable` of the request) with the flags that make WebRTC work headless:
// the fake capture device fed from the WAV, permission prompts answered yes,
// autoplay allowed.

import { createInterface } from 'node:readline';
import { mkdtemp, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_CHROMIUM = '/usr/bin/chromium';
// Enough for any test; a page that logs in a loop must not exhaust memory.
const MAX_CONSOLE_ENTRIES = 5_000;

// Nothing but replies may reach stdout, whatever a library prints.
console.log = console.info = console.debug = console.error;
const log = (...parts) => console.error(`[driver ${new Date().toISOString()}]`, ...parts);

const [nodeMajor] = process.versions.node.split('.').map(Number);
if (nodeMajor < 20) {
  log(`node ${process.versions.node} is too old: playwright-core needs node 20 or newer`);
  process.exit(2);
}

let chromium;
let playwrightVersion;
try {
  ({ chromium } = await import('playwright-core'));
  const manifest = new URL('./node_modules/playwright-core/package.json', import.meta.url);
  playwrightVersion = JSON.parse(await readFile(manifest, 'utf8')).version;
} catch (e) {
  log(`cannot load playwright-core (${e.message}): run \`npm ci\` in tests/browser (scripts/test does)`);
  process.exit(2);
}

// --- state ------------------------------------------------------------------

/** id -> { context, userDataDir, processGroup } */
const browsers = new Map();
/** id -> { page, browserId, console: [], errors: [] } */
const pages = new Map();
let nextBrowserId = 1;
let nextPageId = 1;

/** An error whose message is already what the test should read. */
class CommandError extends Error {}

function browserOf(req) {
  const browser = browsers.get(req.browser);
  if (!browser) throw new CommandError(`no browser with id ${JSON.stringify(req.browser)} (closed, or never launched)`);
  return browser;
}

function pageOf(req) {
  const page = pages.get(req.page);
  if (!page) throw new CommandError(`no page with id ${JSON.stringify(req.page)} (closed, or never opened)`);
  return page;
}

function timeoutOf(req) {
  const timeout = req.timeout ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeout !== 'number' || !(timeout >= 0)) throw new CommandError(`timeout must be a number of milliseconds, not ${JSON.stringify(timeout)}`);
  return timeout;
}

function required(req, field, type = 'string') {
  const value = req[field];
  if (typeof value !== type) throw new CommandError(`field "${field}" (${type}) is missing`);
  return value;
}

// A page function from a request: `expression` is evaluated as it is (a
// promise is awaited); `function` is the body of a function of one argument,
// `arg`, called with the request's JSON `arg`. The body is compiled here, so
// a syntax error is reported as such; it runs only in the page (Playwright
// sends its source text).
const AsyncFunction = (async () => {}).constructor;
function pageFunction(req, { sync = false } = {}) {
  if (typeof req.function === 'string') {
    try {
      return sync ? new Function('arg', req.function) : new AsyncFunction('arg', req.function);
    } catch (e) {
      throw new CommandError(`the function body does not compile: ${e.message}`);
    }
  }
  if (typeof req.expression === 'string') return req.expression;
  throw new CommandError('give "expression" (a JavaScript expression) or "function" (a function body using `arg`)');
}

// The processes of one Chromium: Playwright starts it as the leader of a new
// process group, found here by its unique profile directory. The Rust side
// kills that group if this driver ever hangs, so no browser outlives a test.
async function processGroupOf(userDataDir) {
  const needle = `--user-data-dir=${userDataDir}`;
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.split('\0').includes(needle)) continue;
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(fields[2]);
    } catch {
      // The process ended while we looked.
    }
  }
  return null;
}

function record(entry, list) {
  list.push(entry);
  if (list.length > MAX_CONSOLE_ENTRIES) list.splice(0, list.length - MAX_CONSOLE_ENTRIES);
}

function registerPage(page, browserId) {
  const id = nextPageId++;
  const entry = { page, browserId, console: [], errors: [] };
  // Also logged as they come, so that a failed test's report shows them.
  page.on('console', (msg) => {
    const { url, lineNumber } = msg.location();
    const location = url ? `${url}:${lineNumber + 1}` : '';
    record({ type: msg.type(), text: msg.text(), location }, entry.console);
    log(`page ${id} console.${msg.type()}: ${msg.text()}${location ? ` (${location.slice(0, 200)})` : ''}`);
  });
  page.on('pageerror', (err) => {
    record(err.stack || String(err), entry.errors);
    log(`page ${id} error: ${err.stack || err}`);
  });
  page.on('crash', () => {
    record('the page crashed', entry.errors);
    log(`page ${id} crashed`);
  });
  page.on('close', () => pages.delete(id));
  pages.set(id, entry);
  return id;
}

async function closeBrowser(id) {
  const browser = browsers.get(id);
  if (!browser) return;
  browsers.delete(id);
  for (const [pageId, page] of pages) if (page.browserId === id) pages.delete(pageId);
  try {
    await browser.context.close();
  } finally {
    await rm(browser.userDataDir, { recursive: true, force: true });
  }
}

// --- commands -----------------------------------------------------------------

const commands = {
  // Liveness and versions; the Rust side sends it first so that a driver
  // that cannot start is reported at once.
  async ping() {
    return { node: process.versions.node, playwright: playwrightVersion };
  },

  // {fake_audio?, noloop?, executable?, args?, viewport?} -> {browser, version, process_group, user_data_dir}
  async launch(req) {
    const executable = req.executable ?? DEFAULT_CHROMIUM;
    if (!(await stat(executable).catch(() => null))?.isFile()) {
      throw new CommandError(`Chromium is not at ${executable}: apt-get install chromium (scripts/test does), or set SWITCHBOARD_TEST_CHROMIUM`);
    }
    const args = [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ];
    if (req.fake_audio != null) {
      const wav = required(req, 'fake_audio');
      // Chromium silently falls back to a beep when it cannot read the file.
      if (!(await stat(wav).catch(() => null))?.isFile()) throw new CommandError(`the fake microphone WAV ${wav} does not exist`);
      args.push(`--use-file-for-fake-audio-capture=${wav}${req.noloop ? '%noloop' : ''}`);
    }
    if (req.args != null) {
      if (!Array.isArray(req.args) || !req.args.every((a) => typeof a === 'string')) throw new CommandError('"args" must be an array of strings');
      args.push(...req.args);
    }
    const userDataDir = await mkdtemp(join(tmpdir(), 'switchboard-chromium-'));
    let context;
    try {
      context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: executable,
        headless: true,
        args,
        // {width, height}: e.g. the 400×600 of Lightning's utility bar.
        ...(req.viewport ? { viewport: { width: Number(req.viewport.width), height: Number(req.viewport.height) } } : {}),
        timeout: timeoutOf({ timeout: req.timeout ?? 30_000 }),
        // Chromium's own output, for the driver's log.
        logger: {
          isEnabled: (name) => name === 'browser',
          log: (name, severity, message) => log(`chromium: ${message}`),
        },
      });
    } catch (e) {
      await rm(userDataDir, { recursive: true, force: true });
      throw new CommandError(`Chromium ${executable} did not start: ${e.message}`);
    }
    const id = nextBrowserId++;
    const processGroup = await processGroupOf(userDataDir);
    browsers.set(id, { context, userDataDir, processGroup });
    context.on('close', () => {
      if (browsers.has(id)) log(`browser ${id} closed unexpectedly`);
    });
    log(`browser ${id}: ${executable} (process group ${processGroup}) with ${args.join(' ')}`);
    return { browser: id, version: context.browser()?.version() ?? null, process_group: processGroup, user_data_dir: userDataDir };
  },

  // {browser, url?, timeout?} -> {page}
  async new_page(req) {
    const browser = browserOf(req);
    // A persistent context opens with one blank tab: the first page reuses it.
    const blank = browser.context.pages().find((p) => p.url() === 'about:blank' && ![...pages.values()].some((e) => e.page === p));
    const page = blank ?? (await browser.context.newPage());
    const id = registerPage(page, req.browser);
    if (req.url != null) {
      try {
        await page.goto(required(req, 'url'), { timeout: timeoutOf(req), waitUntil: req.wait_until ?? 'load' });
      } catch (e) {
        throw new CommandError(`opening ${req.url}: ${e.message}`);
      }
    }
    return { page: id };
  },

  async goto(req) {
    const { page } = pageOf(req);
    const url = required(req, 'url');
    try {
      const response = await page.goto(url, { timeout: timeoutOf(req), waitUntil: req.wait_until ?? 'load' });
      return { status: response?.status() ?? null };
    } catch (e) {
      throw new CommandError(`goto ${url}: ${e.message}`);
    }
  },

  async click(req) {
    const selector = required(req, 'selector');
    await pageOf(req).page.locator(selector).click({ timeout: timeoutOf(req) });
    return null;
  },

  async fill(req) {
    const selector = required(req, 'selector');
    await pageOf(req).page.locator(selector).fill(required(req, 'value'), { timeout: timeoutOf(req) });
    return null;
  },

  async press(req) {
    const selector = required(req, 'selector');
    await pageOf(req).page.locator(selector).press(required(req, 'key'), { timeout: timeoutOf(req) });
    return null;
  },

  async wait_for(req) {
    const selector = required(req, 'selector');
    const state = req.state ?? 'visible';
    if (!['attached', 'detached', 'visible', 'hidden'].includes(state)) {
      throw new CommandError(`state must be attached, detached, visible or hidden, not ${JSON.stringify(state)}`);
    }
    await pageOf(req).page.locator(selector).waitFor({ state, timeout: timeoutOf(req) });
    return null;
  },

  // The text as rendered (innerText), of exactly one element.
  async text(req) {
    const selector = required(req, 'selector');
    return await pageOf(req).page.locator(selector).innerText({ timeout: timeoutOf(req) });
  },

  async evaluate(req) {
    const { page } = pageOf(req);
    return await page.evaluate(pageFunction(req), req.arg ?? null);
  },

  // Polls a predicate in the page until it is truthy; returns its value.
  async wait_for_function(req) {
    const { page } = pageOf(req);
    const handle = await page.waitForFunction(pageFunction(req, { sync: true }), req.arg ?? null, {
      timeout: timeoutOf(req),
      polling: req.polling ?? 'raf',
    });
    try {
      return await handle.jsonValue();
    } finally {
      await handle.dispose().catch(() => {});
    }
  },

  async screenshot(req) {
    const { page } = pageOf(req);
    const path = required(req, 'path');
    await mkdir(dirname(path), { recursive: true });
    const png = await page.screenshot({ path, fullPage: req.full_page ?? true, timeout: timeoutOf(req) });
    return { path, bytes: png.length };
  },

  // Everything the page logged, and its uncaught errors, since it opened.
  async console(req) {
    const entry = pageOf(req);
    return { messages: entry.console, errors: entry.errors };
  },

  // Runs `source` in every document of the browser (or of one page) before
  // any script of the document, from the next navigation on.
  async add_init_script(req) {
    const source = required(req, 'source');
    const target = req.page != null ? pageOf(req).page : browserOf(req).context;
    await target.addInitScript({ content: source });
    return null;
  },

  // Cuts (or restores) the browser's network: HTTP, fetch and WebSockets
  // fail as when the cable is pulled. WebRTC media is not affected.
  async set_offline(req) {
    await browserOf(req).context.setOffline(required(req, 'offline', 'boolean'));
    return null;
  },

  // {page} closes a tab, {browser} a browser; neither: everything.
  async close(req) {
    if (req.page != null) {
      const { page } = pageOf(req);
      pages.delete(req.page);
      await page.close();
    } else if (req.browser != null) {
      browserOf(req);
      await closeBrowser(req.browser);
    } else {
      await closeAll();
    }
    return null;
  },
};

// Says what failed in the test's terms: the command, the selector, the
// timeout, then Playwright's own account (its call log tells what it saw).
function describe(req, e) {
  const what = [req.cmd];
  if (typeof req.selector === 'string') what.push(JSON.stringify(req.selector));
  if (req.cmd === 'wait_for') what.push(`(state ${req.state ?? 'visible'})`);
  if (typeof req.expression === 'string') what.push(JSON.stringify(req.expression.slice(0, 200)));
  const timedOut = e?.name === 'TimeoutError';
  // Playwright colours its call log for terminals; the test's output is no terminal.
  const reason = (e instanceof CommandError ? e.message : (e?.message ?? String(e)).trim()).replace(/\u001b\[[0-9;]*m/g, '');
  const timeout = timedOut ? `timed out after ${req.timeout ?? DEFAULT_TIMEOUT_MS} ms: ` : '';
  return { error: `${what.join(' ')}: ${timeout}${reason}`, timeout: timedOut };
}

function reply(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

async function serve(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    log(`ignoring a line that is not JSON: ${line.slice(0, 200)}`);
    return;
  }
  const id = req?.id ?? null;
  const handler = Object.hasOwn(commands, req?.cmd) ? commands[req.cmd] : null;
  if (!handler) {
    reply({ id, ok: false, error: `unknown command ${JSON.stringify(req?.cmd)}; known: ${Object.keys(commands).join(', ')}` });
    return;
  }
  const started = Date.now();
  try {
    const value = await handler(req);
    reply({ id, ok: true, value: value === undefined ? null : value });
  } catch (e) {
    const { error, timeout } = describe(req, e);
    log(`request ${id} failed after ${Date.now() - started} ms: ${error}`);
    reply({ id, ok: false, error, timeout });
  }
}

// --- lifetime -------------------------------------------------------------------

let closing = null;
function closeAll() {
  closing ??= Promise.allSettled([...browsers.keys()].map(closeBrowser)).then(() => {
    closing = null;
  });
  return closing;
}

async function shutdown(why) {
  log(`${why}: closing ${browsers.size} browser(s) and exiting`);
  // Do not wait forever for a browser that does not close: the Rust side
  // kills what is left by its process group.
  await Promise.race([closeAll(), new Promise((resolve) => setTimeout(resolve, 10_000).unref())]);
  process.exit(0);
}

process.on('unhandledRejection', (e) => log('unhandled rejection:', e));
process.on('uncaughtException', (e) => log('uncaught exception:', e));
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on('line', (line) => {
  if (line.trim()) serve(line);
});
input.on('close', () => shutdown('stdin closed'));
log(`ready: node ${process.versions.node}, playwright-core ${playwrightVersion}`);
