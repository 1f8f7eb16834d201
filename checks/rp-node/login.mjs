// A strict, independent relying party (panva's openid-client) logging in to a running oxidex.
// Starts nothing: point it at an issuer. See run.sh for the whole check.
//
//   node login.mjs --issuer URL --client-id ID --client-secret SECRET --redirect-uri URI
//                  [--connector local] [--select picker|param] [--login L --password P]
//                  [--expect-email E] [--expect-group G] [--auth basic|post]
//                  [--post-logout-redirect-uri URI] [--skip LIST]
//
// After the login, refresh and replay checks come the provider features a strict RP uses, in
// groups that --skip (comma-separated) can leave out for a server that lacks them:
//   sessions            sid in the ID token; SSO (a second authorization in the same browser needs
//                       no page); prompt=none with the session (a code) and without (login_required)
//   revocation          RFC 7009: a revoked access token is refused at userinfo, a revoked refresh
//                       token no longer refreshes
//   logout              RP-Initiated Logout with id_token_hint, post_logout_redirect_uri and state,
//                       then prompt=none (also with the old cookie) answers login_required
// (client_credentials has its own script, client-credentials.mjs.)
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
  'post-logout-redirect-uri': { type: 'string' },
  skip: { type: 'string' },
};

const GROUPS = ['sessions', 'revocation', 'logout'];

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
    postLogoutRedirectUri: get('post-logout-redirect-uri'),
    skip: new Set((get('skip', '') ?? '').split(',').map((g) => g.trim()).filter(Boolean)),
  };
  opts.expectEmail = get('expect-email', opts.login?.includes('@') ? opts.login : undefined);
  opts.expectGroup = get('expect-group');
  const missing = ['issuer', 'clientId', 'clientSecret', 'redirectUri'].filter((k) => !opts[k]);
  if (missing.length) usage(`missing: ${missing.join(', ')}`);
  if (!['picker', 'param'].includes(opts.select)) usage('--select is picker or param');
  if (!['basic', 'post'].includes(opts.auth)) usage('--auth is basic or post');
  const unknown = [...opts.skip].filter((g) => !GROUPS.includes(g));
  if (unknown.length) usage(`--skip takes ${GROUPS.join(', ')}; unknown: ${unknown.join(', ')}`);
  if (!opts.skip.has('logout') && !opts.postLogoutRedirectUri) usage('the logout checks need --post-logout-redirect-uri');
  return opts;
}

function usage(message) {
  console.error(`login.mjs: ${message}`);
  console.error(
    'usage: node login.mjs --issuer URL --client-id ID --client-secret SECRET --redirect-uri URI ' +
      '[--connector ID] [--select picker|param] [--login L --password P] [--expect-email E] ' +
      '[--expect-group G] [--auth basic|post] [--post-logout-redirect-uri URI] ' +
      `[--skip ${GROUPS.join(',')}]`,
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
  if (err instanceof client.AuthorizationResponseError) {
    return `authorization response error=${err.error}: ${err.error_description ?? ''}`;
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
  constructor(cookies = new Map()) {
    this.cookies = new Map(cookies);
  }

  async request(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.cookies.size) {
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '));
    }
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      // A browser drops a cookie set empty, with Max-Age <= 0 or with an expiry in the past.
      const expired = attrs.some((a) => {
        const [k, v = ''] = a.split('=').map((x) => x.trim());
        if (k.toLowerCase() === 'max-age') return Number(v) <= 0;
        if (k.toLowerCase() === 'expires') return Date.parse(v) <= Date.now();
        return false;
      });
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
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
 * unless `quiet`. With `silent` (SSO, prompt=none) any page or connector callback on the way
 * fails: the browser's session alone must bring it back to the client.
 */
async function loginThroughPages(browser, authorizationUrl, opts, { deny = false, quiet = false, silent = false } = {}) {
  const report = quiet || silent ? () => {} : pass;
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
        assert(!silent, `went through the connector again (${url.pathname})`);
        report('connector callback', `${response.status} → ${url.pathname}`);
      }
      response = await browser.get(url);
      continue;
    }
    const html = await response.text();
    assert(response.status === 200, `${response.status} at ${url.pathname}${url.search}: ${pageText(html)}`);
    assert(!silent, `a page was shown at ${url.pathname}: ${pageText(html)}`);
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

/** An authorization request with PKCE S256, state and nonce (plus `extra` parameters). */
async function authorizationRequest(config, opts, extra = {}) {
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
  Object.assign(parameters, extra);
  return { codeVerifier, state, nonce, authorizationUrl: client.buildAuthorizationUrl(config, parameters) };
}

/** One whole authorization in `browser` (pages as needed, or none with `silent`), then the code exchange. */
async function authorizeAndExchange(config, opts, browser, { extra = {}, silent = false } = {}) {
  const request = await authorizationRequest(config, opts, extra);
  const back = await loginThroughPages(browser, request.authorizationUrl, opts, { quiet: true, silent });
  return client.authorizationCodeGrant(config, back, {
    pkceCodeVerifier: request.codeVerifier,
    expectedState: request.state,
    expectedNonce: request.nonce,
    idTokenExpected: true,
  });
}

/** Expects the authorization to come back to the client with `error=<code>` (state checked by the library). */
async function expectAuthorizationError(config, opts, browser, extra, code) {
  const request = await authorizationRequest(config, opts, extra);
  const back = await loginThroughPages(browser, request.authorizationUrl, opts, { silent: true });
  try {
    await client.authorizationCodeGrant(config, back, {
      pkceCodeVerifier: request.codeVerifier,
      expectedState: request.state,
      expectedNonce: request.nonce,
    });
  } catch (err) {
    if (err instanceof client.AuthorizationResponseError) {
      assert(err.error === code, `error=${err.error} (${err.error_description ?? ''}), expected ${code}`);
      return `error=${err.error} state matched, no page shown`;
    }
    throw err;
  }
  throw new Error(`a code came back; expected error=${code}`);
}

/** Expects the promise (a request with a bearer token) to be refused with 401. */
async function expectUnauthorized(promise) {
  try {
    await promise;
  } catch (err) {
    if (err instanceof client.WWWAuthenticateChallengeError || err instanceof client.ResponseBodyError) {
      assert(err.status === 401, `got ${err.status}, expected 401`);
      const challenge = err.cause?.[0];
      return `${err.status}${challenge?.parameters?.error ? ` ${challenge.parameters.error}` : err.error ? ` ${err.error}` : ''}`;
    }
    throw err;
  }
  throw new Error('accepted; expected 401');
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

  // One browser for the whole run: its session cookie is what SSO, prompt=none and logout use.
  const browser = new Browser();
  let callbackUrl;
  const loggedIn = await check('redirect to client', async () => {
    callbackUrl = await loginThroughPages(browser, authorizationUrl, opts);
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
  // Consent given above is remembered (per user and client), so prompt=consent asks again.
  await check('cancel on approval → access_denied', async () => {
    const denied = await authorizationRequest(config, opts, { prompt: 'consent' });
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

  const run = (group) => !opts.skip.has(group);
  if (run('sessions')) await sessionChecks(config, opts, browser, claims);
  if (run('revocation')) await revocationChecks(config, opts, browser);
  if (run('logout')) await logoutChecks(config, opts, browser, tokens);
  if (opts.skip.size) console.log(`skipped: ${[...opts.skip].join(', ')}`);
}

/** OIDC Core §3.1.2.1 and Dex HEAD's sessions: the login above left a session in `browser`. */
async function sessionChecks(config, opts, browser, claims) {
  await check('sid claim', () => {
    assert(typeof claims.sid === 'string' && claims.sid, `no sid in the ID token: ${short(claims)}`);
    return `sid=${claims.sid}${claims.auth_time ? ` auth_time=${claims.auth_time}` : ''}`;
  });

  await check('SSO: second authorization, no page', async () => {
    const again = await authorizeAndExchange(config, opts, browser, { silent: true });
    const c = again.claims();
    assert(c.sub === claims.sub, `sub ${c.sub} != ${claims.sub}`);
    assert(c.sid === claims.sid, `sid ${c.sid} != ${claims.sid}`);
    // auth_time is the time of the real login, not of the SSO.
    if (claims.auth_time !== undefined || c.auth_time !== undefined) {
      assert(c.auth_time === claims.auth_time, `auth_time ${c.auth_time} != ${claims.auth_time}`);
    }
    return `same sub and sid${c.auth_time ? ', same auth_time' : ''}, code without connector or approval`;
  });

  await check('prompt=none with the session → code', async () => {
    const silent = await authorizeAndExchange(config, opts, browser, { extra: { prompt: 'none' }, silent: true });
    const c = silent.claims();
    assert(c.sub === claims.sub && c.sid === claims.sid, `sub/sid ${c.sub}/${c.sid} != ${claims.sub}/${claims.sid}`);
    return 'same sub and sid';
  });

  await check('prompt=none without a session → login_required', () =>
    expectAuthorizationError(config, opts, new Browser(), { prompt: 'none' }, 'login_required'),
  );
}

/** RFC 7009 at the advertised revocation_endpoint, with the client's own authentication. */
async function revocationChecks(config, opts, browser) {
  const meta = config.serverMetadata();
  if (!(await check('revocation_endpoint advertised', () => {
    assert(meta.revocation_endpoint, 'no revocation_endpoint in discovery');
    return meta.revocation_endpoint;
  }))) return;

  // A fresh grant (SSO when sessions work, the pages again otherwise).
  let fresh;
  if (!(await check('fresh tokens for revocation', async () => {
    fresh = await authorizeAndExchange(config, opts, browser);
    assert(fresh.refresh_token, 'no refresh token');
    await client.fetchUserInfo(config, fresh.access_token, fresh.claims().sub);
    return 'access token accepted at userinfo';
  }))) return;

  await check('tokenRevocation(access token) → userinfo refuses it', async () => {
    await client.tokenRevocation(config, fresh.access_token, { token_type_hint: 'access_token' });
    return expectUnauthorized(client.fetchUserInfo(config, fresh.access_token, fresh.claims().sub));
  });

  await check('tokenRevocation(refresh token) → refresh fails', async () => {
    // Rotate once first: the token revoked below demonstrably worked a moment before.
    const live = await client.refreshTokenGrant(config, fresh.refresh_token);
    assert(live.refresh_token, 'no rotated refresh token');
    await client.tokenRevocation(config, live.refresh_token, { token_type_hint: 'refresh_token' });
    return expectOAuthError(client.refreshTokenGrant(config, live.refresh_token), 'invalid_grant', 'invalid_request');
  });

  await check('revoking an unknown token → 200', async () => {
    await client.tokenRevocation(config, 'not-a-token-we-issued');
    return '200';
  });
}

/** RP-Initiated Logout 1.0 through the advertised end_session_endpoint. */
async function logoutChecks(config, opts, browser, tokens) {
  const meta = config.serverMetadata();
  if (!(await check('end_session_endpoint advertised', () => {
    assert(meta.end_session_endpoint, 'no end_session_endpoint in discovery');
    return meta.end_session_endpoint;
  }))) return;

  // What the browser held before logging out: a copy plays a stolen or kept cookie afterwards.
  const before = new Browser(browser.cookies);
  await check('buildEndSessionUrl → post_logout_redirect_uri with state', async () => {
    const state = client.randomState();
    const url = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: opts.postLogoutRedirectUri,
      state,
    });
    const response = await browser.get(url);
    const location = response.headers.get('location');
    assert(isRedirect(response.status) && location, `${response.status} at ${url.pathname}: ${pageText(await response.text())}`);
    const back = new URL(location, url);
    const expected = new URL(opts.postLogoutRedirectUri);
    assert(back.origin === expected.origin && back.pathname === expected.pathname, `redirected to ${back}`);
    assert(back.searchParams.get('state') === state, `state ${back.searchParams.get('state')} != ${state}`);
    return `${response.status} → ${back.origin}${back.pathname}?state=… (echoed)`;
  });

  await check('after logout: prompt=none → login_required', () =>
    expectAuthorizationError(config, opts, browser, { prompt: 'none' }, 'login_required'),
  );
  await check('after logout: the old session cookie → login_required', () =>
    expectAuthorizationError(config, opts, before, { prompt: 'none' }, 'login_required'),
  );
}

try {
  await main();
} catch (err) {
  fail('unexpected error', describe(err));
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
