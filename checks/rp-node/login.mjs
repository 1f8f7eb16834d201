// A strict, independent relying party (panva's openid-client) logging in to a running oxidex.
// Starts nothing: point it at an issuer. See run.sh for the whole check.
//
//   node login.mjs --issuer URL --client-id ID --client-secret SECRET --redirect-uri URI
//                  [--connector local] [--select picker|param] [--login L --password P]
//                  [--expect-email E] [--expect-group G] [--auth basic|post]
//
// Every flag can also come from the environment (OXIDEX_ISSUER, OXIDEX_CLIENT_ID, ...: the flag
// name upper-cased with `-` → `_`, prefixed with OXIDEX_). One line per step, then
// `N passed, N failed`; the exit status is non-zero when anything failed.

import { parseArgs } from 'node:util';
import { webcrypto } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';

const flagNames = {
  issuer: { type: 'string' },
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  'redirect-uri': { type: 'string' },
  connector: { type: 'string' },
  select: { type: 'string' },
  login: { type: 'string' },
  password: { type: 'string' },
  'expect-email': { type: 'string' },
  'expect-group': { type: 'string' },
  auth: { type: 'string' },
};

function options() {
  const { values } = parseArgs({ options: flagNames, strict: true });
  const get = (name, fallback) => {
    const env = process.env[`OXIDEX_${name.toUpperCase().replaceAll('-', '_')}`];
    return values[name] ?? env ?? fallback;
  };
  const opts = {
    issuer: get('issuer'),
    clientId: get('client-id'),
    clientSecret: get('client-secret'),
    redirectUri: get('redirect-uri'),
    connector: get('connector', 'local'),
    select: get('select', 'picker'),
    login: get('login'),
    password: get('password'),
    auth: get('auth', 'basic'),
  };
  opts.expectEmail = get('expect-email', opts.login?.includes('@') ? opts.login : undefined);
  opts.expectGroup = get('expect-group');
  const missing = ['issuer', 'clientId', 'clientSecret', 'redirectUri'].filter((k) => !opts[k]);
  if (missing.length) usage(`missing: ${missing.join(', ')}`);
  if (!['picker', 'param'].includes(opts.select)) usage('--select is picker or param');
  if (!['basic', 'post'].includes(opts.auth)) usage('--auth is basic or post');
  return opts;
}

function usage(message) {
  console.error(`login.mjs: ${message}`);
  console.error(
    'usage: node login.mjs --issuer URL --client-id ID --client-secret SECRET --redirect-uri URI ' +
      '[--connector ID] [--select picker|param] [--login L --password P] [--expect-email E] ' +
      '[--expect-group G] [--auth basic|post]',
  );
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Reporting

let passed = 0;
let failed = 0;

function pass(step, detail = '') {
  passed += 1;
  console.log(`PASS ${step}${detail ? ` ${detail}` : ''}`);
}

function fail(step, detail) {
  failed += 1;
  console.log(`FAIL ${step} ${detail}`);
}

/** Runs one check; a thrown error fails it. Returns the check's value, or undefined. */
async function check(step, fn) {
  try {
    const detail = await fn();
    pass(step, detail ?? '');
    return true;
  } catch (err) {
    fail(step, describe(err));
    return false;
  }
}

function describe(err) {
  if (err instanceof client.ResponseBodyError) {
    return `${err.status} ${err.error}: ${err.error_description ?? ''}`;
  }
  const code = err?.code ? ` [${err.code}]` : '';
  let cause = '';
  if (err?.cause instanceof Error) cause = ` cause=${err.cause.message}`;
  else if (err?.cause && !(err.cause instanceof Response)) cause = ` cause=${short(err.cause)}`;
  return `${err?.message ?? err}${code}${cause}`;
}

function short(value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text && text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// ---------------------------------------------------------------------------------------------
// A tiny browser: manual redirects, a cookie jar, forms and links read from the HTML.

class Browser {
  constructor() {
    this.cookies = new Map();
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.cookies.size) {
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    }
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq > 0) this.cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    return response;
  }

  get(url) {
    return this.request(url);
  }

  post(url, fields) {
    return this.request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
  }
}

function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|amp|lt|gt|quot|apos);/gi, (_, entity) => {
    const e = entity.toLowerCase();
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e];
  });
}

function attributes(tag) {
  const attrs = {};
  for (const m of tag.matchAll(/([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

function forms(html, base) {
  return [...html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)].map((m) => {
    const attrs = attributes(m[1]);
    const inputs = [...m[2].matchAll(/<input\b([^>]*)>/gi)].map((i) => attributes(i[1]));
    return {
      action: new URL(attrs.action ?? '', base),
      method: (attrs.method ?? 'get').toLowerCase(),
      inputs,
      hidden: inputs.filter((i) => i.type === 'hidden' && i.name).map((i) => [i.name, i.value ?? '']),
    };
  });
}

function links(html, base) {
  return [...html.matchAll(/<a\b([^>]*)>([\s\S]*?)<\/a>/gi)]
    .map((m) => ({ attrs: attributes(m[1]), text: m[2].replace(/<[^>]*>/g, '').trim() }))
    .filter((l) => l.attrs.href)
    .map((l) => ({ url: new URL(l.attrs.href, base), text: decodeEntities(l.text) }));
}

function pageText(html) {
  const main = html.match(/<main\b[^>]*>([\s\S]*?)<\/main>/i)?.[1] ?? html;
  return decodeEntities(main.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim()).slice(0, 300);
}

const isRedirect = (status) => [301, 302, 303, 307, 308].includes(status);

/**
 * Plays the user: follows redirects from the authorization URL, chooses the connector on the
 * picker, fills the password form, grants access (or, with `deny`, cancels), and stops at the
 * first redirect to the client's redirect URI. Returns that URL; reports one step per page
 * unless `quiet`.
 */
async function loginThroughPages(browser, authorizationUrl, opts, { deny = false, quiet = false } = {}) {
  const report = quiet ? () => {} : pass;
  const redirectUri = new URL(opts.redirectUri);
  const atClient = (url) => url.origin === redirectUri.origin && url.pathname === redirectUri.pathname;
  let response = await browser.get(authorizationUrl);
  let url = authorizationUrl;
  const seen = [];
  for (let hop = 0; hop < 25; hop += 1) {
    if (isRedirect(response.status)) {
      const location = response.headers.get('location');
      assert(location, `${response.status} without Location at ${url.pathname}`);
      url = new URL(location, url);
      if (atClient(url)) return url;
      if (/\/callback(\/[^/]+)?$/.test(url.pathname)) {
        report('connector callback', `${response.status} → ${url.pathname}`);
      }
      response = await browser.get(url);
      continue;
    }
    const html = await response.text();
    assert(response.status === 200, `${response.status} at ${url.pathname}${url.search}: ${pageText(html)}`);
    const pageForms = forms(html, url);
    const passwordForm = pageForms.find((f) => f.inputs.some((i) => i.name === 'password'));
    const decision = deny ? 'rejected' : 'approve';
    const approveForm = pageForms.find((f) => f.hidden.some(([n, v]) => n === 'approval' && v === decision));
    if (passwordForm) {
      assert(!seen.includes('password'), `password form shown again: ${pageText(html)}`);
      seen.push('password');
      assert(opts.login && opts.password, 'the connector asks for a password: pass --login and --password');
      assert(passwordForm.method === 'post', 'password form is not POST');
      assert(passwordForm.hidden.some(([n]) => n === 'csrf_token'), 'password form has no csrf_token');
      const fields = [...passwordForm.hidden, ['login', opts.login], ['password', opts.password]];
      response = await browser.post(passwordForm.action, fields);
      assert(isRedirect(response.status), `password POST answered ${response.status}: ${pageText(await response.text())}`);
      report('password form', `${passwordForm.action.pathname} login=${opts.login} → ${response.status}`);
      url = passwordForm.action;
      continue;
    }
    if (approveForm) {
      assert(!seen.includes('approval'), 'approval page shown again');
      seen.push('approval');
      assert(approveForm.hidden.some(([n]) => n === 'csrf_token'), 'approval form has no csrf_token');
      response = await browser.post(approveForm.action, approveForm.hidden);
      assert(isRedirect(response.status), `approval POST answered ${response.status}`);
      report('approval page', `${approveForm.action.pathname} approval=${decision} → ${response.status}`);
      url = approveForm.action;
      continue;
    }
    const choice = links(html, url).find((l) => l.url.pathname.endsWith(`/auth/${opts.connector}`));
    if (choice) {
      assert(!seen.includes('picker'), 'connector picker shown again');
      seen.push('picker');
      const offered = links(html, url).filter((l) => /\/auth\/[^/]+$/.test(l.url.pathname)).length;
      report('connector picker', `${offered} connectors, chose "${choice.text}" (${choice.url.pathname})`);
      url = choice.url;
      response = await browser.get(url);
      continue;
    }
    throw new Error(`unexpected page at ${url.pathname}: ${pageText(html)}`);
  }
  throw new Error('too many redirects and pages');
}

// ---------------------------------------------------------------------------------------------
// Checks beyond what openid-client does

/** OIDC Core 3.1.3.6: left half of SHA-256 (for RS256/ES256/PS256) of the token, base64url. */
async function tokenHash(token, alg) {
  const bits = alg.slice(-3);
  const digest = { 256: 'SHA-256', 384: 'SHA-384', 512: 'SHA-512' }[bits];
  assert(digest, `no hash for alg ${alg}`);
  const hash = new Uint8Array(await webcrypto.subtle.digest(digest, new TextEncoder().encode(token)));
  return Buffer.from(hash.slice(0, hash.length / 2)).toString('base64url');
}

function jwtHeader(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString('utf8'));
}

async function checkAtHash(tokens) {
  const header = jwtHeader(tokens.id_token);
  const claims = tokens.claims();
  assert(claims.at_hash, 'ID token has no at_hash');
  const expected = await tokenHash(tokens.access_token, header.alg);
  assert(claims.at_hash === expected, `at_hash ${claims.at_hash} != ${expected}`);
  return `at_hash=${claims.at_hash} (${header.alg}, kid=${header.kid})`;
}

/** Expects the promise to fail with a 400 and one of the OAuth error `codes` from the token endpoint. */
async function expectOAuthError(promise, ...codes) {
  try {
    await promise;
  } catch (err) {
    if (err instanceof client.ResponseBodyError) {
      assert(err.status === 400 && codes.includes(err.error), `got ${err.status} ${err.error}, expected 400 ${codes.join(' or ')}`);
      return `${err.status} ${err.error}`;
    }
    throw err;
  }
  throw new Error(`accepted; expected ${codes.join(' or ')}`);
}

/** An authorization request with PKCE S256, state and nonce. */
async function authorizationRequest(config, opts) {
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const parameters = {
    redirect_uri: opts.redirectUri,
    scope: 'openid email profile groups offline_access',
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  };
  if (opts.select === 'param') parameters.connector_id = opts.connector;
  return { codeVerifier, state, nonce, authorizationUrl: client.buildAuthorizationUrl(config, parameters) };
}

function libraryVersion(name) {
  try {
    const file = new URL(`./node_modules/${name}/package.json`, import.meta.url);
    return JSON.parse(readFileSync(file, 'utf8')).version;
  } catch {
    return '?';
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = options();
  console.log(
    `openid-client ${libraryVersion('openid-client')} (oauth4webapi ${libraryVersion('oauth4webapi')}) against ${opts.issuer} ` +
      `(connector ${opts.connector} via ${opts.select}, client auth ${opts.auth})`,
  );

  // Discovery. allowInsecureRequests: the test issuer is loopback http.
  // enableNonRepudiationChecks: verify ID token signatures against the issuer's JWKS (by
  // default openid-client trusts the TLS channel to the token endpoint instead).
  let config;
  const discovered = await check('discovery', async () => {
    const auth = opts.auth === 'basic' ? client.ClientSecretBasic(opts.clientSecret) : client.ClientSecretPost(opts.clientSecret);
    config = await client.discovery(new URL(opts.issuer), opts.clientId, undefined, auth, {
      execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    });
    const meta = config.serverMetadata();
    assert(meta.issuer === opts.issuer, `issuer ${meta.issuer}`);
    assert(meta.code_challenge_methods_supported?.includes('S256'), 'S256 PKCE not advertised');
    assert(meta.supportsPKCE(), 'supportsPKCE() is false');
    return `issuer=${meta.issuer} jwks_uri=${meta.jwks_uri}`;
  });
  if (!discovered) return;

  const { codeVerifier, state, nonce, authorizationUrl } = await authorizationRequest(config, opts);
  pass('authorization url', `${authorizationUrl.pathname} S256 state nonce${opts.select === 'param' ? ` connector_id=${opts.connector}` : ''}`);

  let callbackUrl;
  const loggedIn = await check('redirect to client', async () => {
    callbackUrl = await loginThroughPages(new Browser(), authorizationUrl, opts);
    assert(callbackUrl.searchParams.get('code'), `no code in ${callbackUrl}`);
    return `${callbackUrl.origin}${callbackUrl.pathname}?code=…&state=…`;
  });
  if (!loggedIn) return;

  // Code exchange: openid-client checks state, sends the PKCE verifier, requires an ID token,
  // verifies its signature via JWKS, iss, aud/azp, exp, iat, nonce.
  let tokens;
  const exchanged = await check('code exchange + ID token validation', async () => {
    tokens = await client.authorizationCodeGrant(config, callbackUrl, {
      pkceCodeVerifier: codeVerifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    assert(tokens.token_type === 'bearer', `token_type ${tokens.token_type}`);
    assert(claims.nonce === nonce, 'nonce');
    return `sub=${claims.sub} aud=${JSON.stringify(claims.aud)} exp-iat=${claims.exp - claims.iat}s`;
  });
  if (!exchanged) return;
  const claims = tokens.claims();

  await check('at_hash', () => checkAtHash(tokens));

  await check('ID token claims', async () => {
    if (opts.expectEmail) {
      assert(claims.email === opts.expectEmail, `email ${claims.email}`);
      assert(claims.email_verified === true, 'email_verified is not true');
    }
    if (opts.expectGroup) {
      assert(Array.isArray(claims.groups) && claims.groups.includes(opts.expectGroup), `groups ${JSON.stringify(claims.groups)}`);
    }
    assert(typeof claims.name === 'string' && claims.name, 'profile scope: no name');
    return `email=${claims.email} name=${JSON.stringify(claims.name)} groups=${JSON.stringify(claims.groups)}`;
  });

  await check('refresh token issued', () => {
    assert(typeof tokens.refresh_token === 'string' && tokens.refresh_token, 'offline_access gave no refresh token');
    assert(tokens.expiresIn() > 0, 'expires_in');
    return `expires_in=${tokens.expiresIn()}s`;
  });

  // Userinfo through the library: it checks the response's sub equals the ID token's.
  await check('userinfo', async () => {
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    if (opts.expectEmail) assert(info.email === opts.expectEmail, `email ${info.email}`);
    return short(info);
  });

  // Refresh: the library validates the new ID token (signature, iss, aud, exp, iat).
  let refreshed;
  const didRefresh = await check('refresh + ID token validation', async () => {
    refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    assert(refreshed.id_token, 'no ID token on refresh');
    const c = refreshed.claims();
    assert(c.sub === claims.sub, `sub changed: ${c.sub}`);
    assert(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'refresh token not rotated');
    assert(refreshed.access_token !== tokens.access_token, 'same access token');
    await checkAtHash(refreshed);
    return `sub unchanged, rotated, at_hash ok, nonce ${c.nonce === nonce ? 'kept' : 'absent'}`;
  });

  await check('userinfo with refreshed token', async () => {
    assert(didRefresh, 'no refreshed token');
    const info = await client.fetchUserInfo(config, refreshed.access_token, claims.sub);
    return `sub=${info.sub}`;
  });

  await check('old refresh token replay rejected', () =>
    expectOAuthError(client.refreshTokenGrant(config, tokens.refresh_token), 'invalid_grant'),
  );

  await check('replay revoked the rotated token', async () => {
    assert(didRefresh, 'no refreshed token');
    // The token no longer exists: Dex answers an unknown refresh token with invalid_request.
    return expectOAuthError(client.refreshTokenGrant(config, refreshed.refresh_token), 'invalid_request', 'invalid_grant');
  });

  // Last: a replayed code also revokes the refresh token of its first exchange.
  await check('code replay rejected', () =>
    expectOAuthError(
      client.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: codeVerifier,
        expectedState: state,
        expectedNonce: nonce,
      }),
      'invalid_grant',
    ),
  );

  // The user cancels on the approval page: the library reads the error redirect (state checked).
  await check('cancel on approval → access_denied', async () => {
    const denied = await authorizationRequest(config, opts);
    const back = await loginThroughPages(new Browser(), denied.authorizationUrl, opts, { deny: true, quiet: true });
    try {
      await client.authorizationCodeGrant(config, back, {
        pkceCodeVerifier: denied.codeVerifier,
        expectedState: denied.state,
        expectedNonce: denied.nonce,
      });
    } catch (err) {
      if (err instanceof client.AuthorizationResponseError) {
        assert(err.error === 'access_denied', `error=${err.error}`);
        return `error=${err.error} state matched`;
      }
      throw err;
    }
    throw new Error('a code came back after Cancel');
  });
}

try {
  await main();
} catch (err) {
  fail('unexpected error', describe(err));
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
