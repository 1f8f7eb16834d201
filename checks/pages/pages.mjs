// Walks oxidex's browser pages in headless Chromium, through the real flows, and checks
// each page: axe-core (WCAG 2.x A/AA and best practices), keyboard use, document
// structure, reflow at 320 CSS px, and a full-page screenshot that must be a real render.
//
//   node pages.mjs --issuer URL --theme NAME --out DIR --rp ORIGIN [--chromium PATH]
//
// The page runs with JavaScript disabled throughout: every form must work without it.
// Requests to ORIGIN (the relying party registered in the config) are answered here,
// so no relying party needs to run; any other host than the issuer's is refused.
// Prints one line per page and a summary; exit status 0 when every check passed.
import { readFileSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const axeVersion = JSON.parse(readFileSync(require.resolve('axe-core/package.json'), 'utf8')).version;

const { values: opt } = parseArgs({
  options: {
    issuer: { type: 'string' },
    theme: { type: 'string' },
    out: { type: 'string' },
    rp: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});
for (const key of ['issuer', 'theme', 'out', 'rp']) {
  if (!opt[key]) {
    console.error(`usage: node pages.mjs --issuer URL --theme NAME --out DIR --rp ORIGIN (missing --${key})`);
    process.exit(2);
  }
}
const issuer = opt.issuer.replace(/\/$/, '');
const issuerOrigin = new URL(issuer).origin;
const rp = new URL(opt.rp).origin;
const redirectUri = `${rp}/callback`;
const postLogoutUri = `${rp}/signed-out`;
mkdirSync(opt.out, { recursive: true });

// axe-core: every WCAG 2.0/2.1/2.2 level A and AA rule, plus the best-practice rules
// (landmarks, headings, regions) that a screen-reader user notices.
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'];
// A real render of a page in this style has anti-aliased text in several colours; a
// blank or failed render has a handful of colours.
const MIN_PNG_BYTES = 4 * 1024;
const MIN_COLOURS = 64;
const WIDE = { width: 1024, height: 768 };
const NARROW = { width: 320, height: 640 };

const failures = [];
// Where fail() records; the self-test points it elsewhere for a while.
let sink = failures;
let quiet = false;
const pages = [];
const rulesChecked = new Set();
let violationsFound = 0;

function fail(page, message) {
  sink.push(`${opt.theme}/${page}: ${message}`);
  if (!quiet) console.log(`  FAIL ${page}: ${message}`);
}

function authUrl(params) {
  const url = new URL(`${issuer}/auth`);
  for (const [k, v] of Object.entries({
    client_id: 'example-app',
    redirect_uri: redirectUri,
    response_type: 'code',
    scope: 'openid email profile groups offline_access',
    state: 'pages-state',
    ...params,
  })) {
    url.searchParams.set(k, v);
  }
  return url.href;
}

// Relative luminance and contrast ratio (WCAG 2.x definitions).
function luminance([r, g, b]) {
  const c = [r, g, b].map((v) => {
    const s = v / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}
function contrast(a, b) {
  const [l1, l2] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (l1 + 0.05) / (l2 + 0.05);
}

async function newBrowserPage(browser, rpHits) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport(WIDE);
  await page.setJavaScriptEnabled(false);
  await page.setRequestInterception(true);
  page.on('request', (request) => {
    const url = request.url();
    if (url.startsWith(`${rp}/`)) {
      rpHits.push(url);
      request.respond({
        status: 200,
        contentType: 'text/html; charset=utf-8',
        body: '<!DOCTYPE html><html lang="en"><title>RP</title><h1>Relying party</h1></html>',
      });
    } else if (url.startsWith(`${issuerOrigin}/`) || url.startsWith('data:')) {
      request.continue();
    } else {
      request.abort('blockedbyclient');
    }
  });
  return { context, page };
}

// What the page offers to the keyboard, in DOM order: every enabled, rendered control
// and link that is not taken out of the tab order.
async function focusables(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]');
    return [...all]
      .filter((el) => !(el instanceof HTMLInputElement && el.type === 'hidden'))
      .filter((el) => !el.disabled && el.tabIndex >= 0)
      .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')
      .map((el) => el.outerHTML.slice(0, 120));
  });
}

async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const style = getComputedStyle(el);
    const rgb = (s) => (s.match(/\d+(\.\d+)?/g) || []).slice(0, 4).map(Number);
    // The colour the outline is drawn on: the nearest ancestor with an opaque background.
    let bg = [255, 255, 255];
    for (let n = el.parentElement; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0)) {
        bg = c.slice(0, 3);
        break;
      }
    }
    return {
      html: el.outerHTML.slice(0, 120),
      outlineStyle: style.outlineStyle,
      outlineWidth: parseFloat(style.outlineWidth) || 0,
      outlineColor: rgb(style.outlineColor).slice(0, 3),
      background: bg,
    };
  });
}

// Sequential focus navigation from the top of the document: Tab must visit exactly the
// focusable elements, in DOM order, each with a visible focus indicator.
async function checkKeyboard(name, page) {
  const expected = await focusables(page);
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.mouse.click(1, 1);
  const seen = [];
  for (let i = 0; i < expected.length; i++) {
    await page.keyboard.press('Tab');
    const f = await focused(page);
    if (!f) {
      fail(name, `Tab #${i + 1} focused nothing`);
      return;
    }
    seen.push(f.html);
    if (f.outlineStyle === 'none' || f.outlineWidth < 2) {
      fail(name, `no visible focus outline on ${f.html}`);
    } else {
      const ratio = contrast(f.outlineColor, f.background);
      if (ratio < 3) fail(name, `focus outline contrast ${ratio.toFixed(2)} < 3:1 on ${f.html}`);
    }
  }
  if (JSON.stringify(seen) !== JSON.stringify(expected)) {
    fail(name, `Tab order ${JSON.stringify(seen)} is not the DOM order ${JSON.stringify(expected)}`);
  }
  return expected.length;
}

async function checkAxe(name, page) {
  // axe needs timers, which do not run while the page's scripts are off; the page itself
  // has no script (checkStructure), so turning them on for the audit changes nothing.
  await page.setJavaScriptEnabled(true);
  await page.evaluate(axeSource);
  const result = await page.evaluate(
    (tags) => window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] }).then((r) => ({
      violations: r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary.replace(/\s+/g, ' ')}`),
      })),
      incomplete: r.incomplete.map((v) => v.id),
      rules: [...r.passes, ...r.violations, ...r.incomplete, ...r.inapplicable].map((v) => v.id),
    })),
    AXE_TAGS,
  );
  await page.setJavaScriptEnabled(false);
  if (!quiet) result.rules.forEach((id) => rulesChecked.add(id));
  for (const v of result.violations) {
    if (!quiet) violationsFound += v.nodes.length;
    fail(name, `axe ${v.id} (${v.impact}): ${v.help}\n      ${v.nodes.join('\n      ')}`);
  }
  return result;
}

async function checkStructure(name, page) {
  const s = await page.evaluate(() => ({
    lang: document.documentElement.getAttribute('lang') || '',
    title: document.title.trim(),
    h1: document.querySelectorAll('h1').length,
    main: document.querySelectorAll('main').length,
    scripts: document.querySelectorAll('script').length,
    // Each field marked invalid names the message that says why (aria-describedby).
    invalid: [...document.querySelectorAll('[aria-invalid=true]')].map((el) => ({
      field: el.outerHTML.slice(0, 80),
      message: (el.getAttribute('aria-describedby') || '')
        .split(/\s+/)
        .map((id) => document.getElementById(id))
        .filter(Boolean)
        .map((m) => m.textContent.trim())
        .join(' '),
    })),
    handlers: [...document.querySelectorAll('*')].some((el) => [...el.attributes].some((a) => a.name.startsWith('on'))),
  }));
  if (!s.lang) fail(name, '<html> has no lang');
  if (!s.title) fail(name, 'no <title>');
  if (s.h1 !== 1) fail(name, `${s.h1} <h1> elements, want exactly one`);
  if (s.main !== 1) fail(name, `${s.main} <main> landmarks, want exactly one`);
  if (s.scripts || s.handlers) fail(name, 'the page carries script; it must work without JavaScript');
  for (const { field, message } of s.invalid) {
    if (!message) fail(name, `invalid field without a message (aria-describedby): ${field}`);
  }
  // After a failed submission the title is what a screen reader announces first.
  if (s.invalid.length && !/^error\b/i.test(s.title)) fail(name, `the page reports invalid input but its title does not: "${s.title}"`);
  return s;
}

// WCAG 1.4.11 (non-text contrast), which axe does not check: what shows where a
// control is (its border, or its own background) must reach 3:1 against what
// surrounds it. Native checkboxes are drawn by the browser and left out.
async function checkControlContrast(name, page) {
  const controls = await page.evaluate(() => {
    const rgba = (s) => (s.match(/\d+(\.\d+)?/g) || []).map(Number);
    const opaque = (c) => c.length >= 3 && (c.length < 4 || c[3] > 0);
    const around = (el) => {
      for (let n = el.parentElement; n; n = n.parentElement) {
        const c = rgba(getComputedStyle(n).backgroundColor);
        if (opaque(c)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const sel = 'input:not([type=hidden]):not([type=checkbox]):not([type=radio]), button, a.button, select, textarea';
    return [...document.querySelectorAll(sel)]
      .filter((el) => el.getClientRects().length > 0)
      .map((el) => {
        const st = getComputedStyle(el);
        const own = rgba(st.backgroundColor);
        const border = rgba(st.borderTopColor);
        const hasBorder = st.borderTopStyle !== 'none' && parseFloat(st.borderTopWidth) > 0 && opaque(border);
        return {
          html: el.outerHTML.slice(0, 100),
          around: around(el),
          own: opaque(own) ? own.slice(0, 3) : null,
          border: hasBorder ? border.slice(0, 3) : null,
        };
      });
  });
  for (const c of controls) {
    const ratios = [c.own, c.border].filter(Boolean).map((x) => contrast(x, c.around));
    const best = Math.max(0, ...ratios);
    if (best < 3) fail(name, `control boundary contrast ${best.toFixed(2)} < 3:1 (WCAG 1.4.11) on ${c.html}`);
  }
}

// WCAG 1.4.10 (reflow): at 320 CSS px nothing may need horizontal scrolling.
async function checkReflow(name, page, file) {
  await page.setViewport(NARROW);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  if (overflow > 0) fail(name, `at ${NARROW.width} px the page scrolls sideways by ${overflow} px`);
  await page.screenshot({ path: file, fullPage: true });
  await page.setViewport(WIDE);
}

// Every check on the page the browser shows now.
// A page that answers a failed submission marks the fields concerned as invalid.
async function checkFailedForm(name, page, formError) {
  if (!formError) return;
  const invalid = await page.$$eval('form [aria-invalid=true]', (els) => els.map((el) => el.id));
  for (const id of formError) {
    if (!invalid.includes(id)) fail(name, `#${id} is not marked aria-invalid after the failed submission`);
  }
}

async function checkPage(name, page, { status, contains, formError } = {}) {
  const started = Date.now();
  const response = page.lastResponse;
  const code = response ? response.status() : 0;
  if (status !== undefined && code !== status) fail(name, `HTTP ${code}, want ${status}`);
  if (!page.url().startsWith(issuer)) fail(name, `not an oxidex page: ${page.url()}`);
  await checkFailedForm(name, page, formError);
  const text = await page.evaluate(() => document.body.innerText);
  for (const want of contains || []) {
    if (!text.includes(want)) fail(name, `page does not say ${JSON.stringify(want)}`);
  }
  const structure = await checkStructure(name, page);
  const axe = await checkAxe(name, page);
  const tabStops = await checkKeyboard(name, page);
  await checkControlContrast(name, page);
  const png = join(opt.out, `${opt.theme}-${name}.png`);
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.screenshot({ path: png, fullPage: true });
  const narrowPng = join(opt.out, `${opt.theme}-${name}-320px.png`);
  await checkReflow(name, page, narrowPng);
  pages.push({ name, url: page.url(), status: code, title: structure.title, tabStops, violations: axe.violations.length, incomplete: axe.incomplete, pngs: [png, narrowPng] });
  console.log(`  ${name}: HTTP ${code}, "${structure.title}", ${tabStops} tab stops, ${axe.violations.length} axe violations, ${Date.now() - started} ms`);
}

async function go(page, url) {
  page.lastResponse = await page.goto(url, { waitUntil: 'load' });
}

// Moves focus with Tab (from the top) until `selector` has it, as a keyboard user would.
async function tabTo(name, page, selector) {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.mouse.click(1, 1);
  for (let i = 0; i < 20; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((s) => document.activeElement && document.activeElement.matches(s), selector)) return true;
  }
  fail(name, `Tab never reaches ${selector}`);
  return false;
}

async function typeInto(name, page, selector, value) {
  if (!(await tabTo(name, page, selector))) return;
  await page.keyboard.down('Control');
  await page.keyboard.press('KeyA');
  await page.keyboard.up('Control');
  await page.keyboard.press('Backspace');
  await page.keyboard.type(value);
}

// Enter on the focused button (or link) must submit (follow) it.
async function enterOn(name, page, selector) {
  if (!(await tabTo(name, page, selector))) throw new Error(`${name}: cannot reach ${selector}`);
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.keyboard.press('Enter')]);
  page.lastResponse = response;
}

function lastHit(rpHits, path) {
  const hit = [...rpHits].reverse().find((u) => new URL(u).pathname === path);
  return hit ? new URL(hit) : null;
}

// The checks themselves must catch what they are for: a page with a known fault of
// each kind must fail each of them.
const BROKEN_PAGE = `<!DOCTYPE html><html><head></head><body><div style="width:600px">
<p style="color:#bbb;background:#fff">low contrast</p><input id="x" style="border:1px solid #eee;background:#fff">
<button style="outline:none" tabindex="2">b</button><a href="#top">link</a>
<h1>one</h1><h1>two</h1><input aria-label="y" aria-invalid="true" aria-describedby="nothing"></div></body></html>`;

async function selfTest(browser) {
  const { context, page } = await newBrowserPage(browser, []);
  await page.goto(`data:text/html;charset=utf-8,${encodeURIComponent(BROKEN_PAGE)}`);
  const missed = [];
  const expect = async (what, check) => {
    const caught = [];
    sink = caught;
    quiet = true;
    try {
      await check();
    } finally {
      sink = failures;
      quiet = false;
    }
    if (caught.length === 0) missed.push(what);
  };
  await expect('structure', () => checkStructure('self-test', page));
  await expect('axe', () => checkAxe('self-test', page));
  await expect('keyboard', () => checkKeyboard('self-test', page));
  await expect('reflow', () => checkReflow('self-test', page, join(opt.out, `${opt.theme}-self-test.png`)));
  await expect('failed form', () => checkFailedForm('self-test', page, ['x']));
  await expect('non-text contrast', () => checkControlContrast('self-test', page));
  await context.close();
  if (missed.length) fail('self-test', `a known-broken page passed: ${missed.join(', ')}`);
  else console.log('  self-test: a known-broken page fails structure, axe, keyboard, reflow, failed-form and non-text contrast checks');
}

async function walk(browser) {
  const rpHits = [];
  const { context, page } = await newBrowserPage(browser, rpHits);
  const primary = 'button[type=submit]:not(.secondary)';

  // 1. Password login with a wrong password first, consent, and the signed-in root page.
  await go(page, authUrl({}));
  await checkPage('connectors', page, { status: 200, contains: ['Log in with Email', 'Log in with Example'] });
  await enterOn('connectors', page, 'a.button[href*="local"]');
  await checkPage('password', page, { status: 200, contains: ['Password', 'Keep me signed in'] });
  await typeInto('password', page, '#login', 'admin@example.com');
  await typeInto('password', page, '#password', 'not the password');
  await enterOn('password', page, primary);
  await checkPage('password-error', page, { contains: ['Invalid'], formError: ['login', 'password'] });
  await typeInto('password-error', page, '#password', 'password');
  await enterOn('password-error', page, primary);
  await checkPage('approval', page, { status: 200, contains: ['Grant access', 'Example App'] });
  await enterOn('approval', page, primary);
  const callback = lastHit(rpHits, '/callback');
  if (!callback || !callback.searchParams.get('code') || callback.searchParams.get('state') !== 'pages-state') {
    fail('approval', `granting did not reach the client with a code and its state: ${callback}`);
  }
  await go(page, `${issuer}/`);
  await checkPage('root-signed-in', page, { status: 200, contains: ['Signed in', 'admin@example.com', 'Sign out'] });

  // 2. /logout without a hint asks first; confirming ends the session.
  await go(page, `${issuer}/logout`);
  await checkPage('logout-confirm', page, { status: 200, contains: ['Sign out?', 'admin'] });
  await enterOn('logout-confirm', page, primary);
  await checkPage('signed-out', page, { status: 200, contains: ['Signed out'] });
  await go(page, `${issuer}/logout`);
  await checkPage('logout-not-signed-in', page, { status: 200, contains: ['Not signed in'] });
  await go(page, `${issuer}/`);
  await checkPage('root-not-signed-in', page, { status: 200, contains: ['Not signed in'] });

  // 3. The mock connector, then RP-initiated logout back to the client with its state.
  await go(page, authUrl({ connector_id: 'mock' }));
  await checkPage('approval-mock', page, { status: 200, contains: ['Grant access'] });
  await enterOn('approval-mock', page, primary);
  const logoutUrl = new URL(`${issuer}/logout`);
  logoutUrl.searchParams.set('client_id', 'example-app');
  logoutUrl.searchParams.set('post_logout_redirect_uri', postLogoutUri);
  logoutUrl.searchParams.set('state', 'logout-state');
  await go(page, logoutUrl.href);
  await checkPage('logout-confirm-client', page, { status: 200, contains: ['Sign out?'] });
  await enterOn('logout-confirm-client', page, primary);
  const back = lastHit(rpHits, '/signed-out');
  if (!back || back.searchParams.get('state') !== 'logout-state') {
    fail('logout-confirm-client', `confirming did not return to the client with its state: ${back}`);
  }

  // 4. An error page: an unknown client.
  await go(page, authUrl({ client_id: 'no-such-client' }));
  // Dex answers an unknown client_id with 404 and a page.
  await checkPage('error', page, { status: 404, contains: ['Invalid client_id'] });

  // 5. The device flow: code entry (empty, invalid), login, success.
  const device = await fetch(`${issuer}/device/code`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ client_id: 'example-cli', scope: 'openid' }),
  }).then((r) => r.json());
  if (!device.user_code) throw new Error(`device/code: ${JSON.stringify(device)}`);
  await go(page, `${issuer}/device`);
  await checkPage('device', page, { status: 200, contains: ['Connect a device'] });
  await typeInto('device', page, '#user_code', 'BBBB-BBBB');
  await enterOn('device', page, primary);
  await checkPage('device-invalid', page, { contains: ['Invalid or expired code'], formError: ['user_code'] });
  await typeInto('device-invalid', page, '#user_code', device.user_code);
  await enterOn('device-invalid', page, primary);
  await enterOn('device-connectors', page, 'a.button[href*="mock"]');
  if (await page.$(primary)) await enterOn('device-approval', page, primary);
  await checkPage('device-success', page, { status: 200, contains: ['Device connected'] });

  // 6. The out-of-band code page (a public client without redirect URIs).
  await go(page, authUrl({ client_id: 'example-cli', redirect_uri: 'urn:ietf:wg:oauth:2.0:oob', connector_id: 'mock' }));
  if (await page.$(primary)) await enterOn('oob-approval', page, primary);
  await checkPage('oob', page, { status: 200, contains: ['Login successful'] });

  await context.close();
}

// Each PNG must be a real render: a non-trivial file with many colours, decoded by
// Chromium itself (with JavaScript on, in a blank page of its own).
async function render(page, file) {
  const bytes = statSync(file).size;
  const data = readFileSync(file).toString('base64');
  const decoded = await page.evaluate(async (b64) => {
    const blob = await (await fetch(`data:image/png;base64,${b64}`)).blob();
    const bitmap = await createImageBitmap(blob);
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    const px = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const seen = new Set();
    for (let i = 0; i < px.length; i += 4) seen.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
    return { width: bitmap.width, height: bitmap.height, colours: seen.size };
  }, data);
  const real = bytes >= MIN_PNG_BYTES && decoded.colours >= MIN_COLOURS;
  return { file, bytes, ...decoded, real };
}

async function checkPngs(browser) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  // A blank page's screenshot must not pass for a render.
  const blank = join(opt.out, `${opt.theme}-self-test-blank.png`);
  await page.screenshot({ path: blank, fullPage: true });
  if ((await render(page, blank)).real) fail('self-test', `a blank screenshot passed the render check: ${blank}`);
  for (const p of pages) {
    p.renders = [];
    for (const file of p.pngs) {
      const r = await render(page, file);
      p.renders.push(r);
      if (!r.real) fail(p.name, `${file} does not look like a render: ${r.bytes} bytes, ${r.width}x${r.height}, ${r.colours} colours`);
    }
  }
  await context.close();
}

const browser = await puppeteer.launch({
  executablePath: opt.chromium,
  headless: true,
  protocolTimeout: 30_000,
  // Root on a CI machine cannot use Chromium's sandbox; the pages are our own.
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage', '--font-render-hinting=none'],
});
let crashed = null;
try {
  console.log(`pages (${opt.theme}): ${await browser.version()}, axe-core ${axeVersion}`);
  await selfTest(browser);
  await walk(browser);
  await checkPngs(browser);
} catch (e) {
  crashed = e;
} finally {
  await browser.close();
}
if (crashed) {
  failures.push(`${opt.theme}: the walk stopped: ${crashed.stack || crashed}`);
  console.log(`  FAIL the walk stopped: ${crashed.stack || crashed}`);
}
const summary = {
  theme: opt.theme,
  pages: pages.length,
  screenshots: pages.reduce((n, p) => n + p.pngs.length, 0),
  axeRules: rulesChecked.size,
  axeViolations: violationsFound,
  failures,
  details: pages,
};
writeFileSync(join(opt.out, `summary-${opt.theme}.json`), JSON.stringify(summary, null, 2));
console.log(
  `pages (${opt.theme}): ${summary.pages} pages, ${summary.screenshots} screenshots, ${summary.axeRules} axe rules, ` +
    `${summary.axeViolations} axe violations (nodes), ${failures.length} failures`,
);
process.exit(failures.length === 0 ? 0 : 1);
