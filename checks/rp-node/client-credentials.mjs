// openid-client's clientCredentialsGrant against a running oxidex on which the
// client_credentials grant is enabled (Dex master's opt-in). Starts nothing.
//
//   node client-credentials.mjs --issuer URL --client-id ID --client-secret SECRET \
//                               [--client-name NAME] [--public-client-id ID]
//
// One line per step, then `N passed, N failed`; non-zero exit status when anything failed.

import { parseArgs } from 'node:util';
import * as client from 'openid-client';

const { values: opts } = parseArgs({
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'client-name': { type: 'string' },
    'public-client-id': { type: 'string' },
  },
  strict: true,
});
for (const key of ['issuer', 'client-id', 'client-secret']) {
  if (!opts[key]) {
    console.error(`client-credentials.mjs: missing --${key}`);
    process.exit(2);
  }
}

let passed = 0;
let failed = 0;

async function check(step, fn) {
  try {
    const detail = await fn();
    passed += 1;
    console.log(`PASS ${step}${detail ? ` ${detail}` : ''}`);
  } catch (err) {
    failed += 1;
    const why =
      err instanceof client.ResponseBodyError
        ? `${err.status} ${err.error}: ${err.error_description ?? ''}`
        : `${err?.message ?? err}`;
    console.log(`FAIL ${step} ${why}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function expectOAuthError(promise, status, code) {
  try {
    await promise;
  } catch (err) {
    if (err instanceof client.ResponseBodyError) {
      assert(err.status === status && err.error === code, `got ${err.status} ${err.error}, want ${status} ${code}`);
      return `${err.status} ${err.error}: ${err.error_description ?? ''}`;
    }
    throw err;
  }
  throw new Error(`succeeded, want ${status} ${code}`);
}

const payload = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));

// Dex's `sub`: base64url(protobuf {1: user id, 2: connector id}); the connector is empty here.
function dexSubject(userId) {
  const id = Buffer.from(userId, 'utf8');
  const varint = [];
  for (let n = id.length; ; n >>= 7) {
    if (n < 0x80) {
      varint.push(n);
      break;
    }
    varint.push((n & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([0x0a, ...varint]), id]).toString('base64url');
}

const options = { execute: [client.allowInsecureRequests] };
const discover = (secret) =>
  client.discovery(new URL(opts.issuer), opts['client-id'], undefined, client.ClientSecretBasic(secret), options);

let config;
await check('discovery advertises client_credentials', async () => {
  config = await discover(opts['client-secret']);
  const grants = config.serverMetadata().grant_types_supported ?? [];
  assert(grants.includes('client_credentials'), `grant_types_supported: ${grants}`);
});

if (config) {
  await check('clientCredentialsGrant: access token for the client itself, no refresh token', async () => {
    const tokens = await client.clientCredentialsGrant(config, { scope: 'profile groups' });
    assert(tokens.token_type?.toLowerCase() === 'bearer', `token_type ${tokens.token_type}`);
    assert(!tokens.refresh_token, 'a refresh token was issued');
    assert(!tokens.id_token, 'an ID token without openid');
    const claims = payload(tokens.access_token);
    assert(claims.sub === dexSubject(opts['client-id']), `sub ${claims.sub}`);
    assert(claims.aud === opts['client-id'], `aud ${JSON.stringify(claims.aud)}`);
    if (opts['client-name']) assert(claims.name === opts['client-name'], `name ${claims.name}`);
    return `sub=${claims.sub}`;
  });
  await check('clientCredentialsGrant with openid: an ID token naming the client (no sid); userinfo', async () => {
    const tokens = await client.clientCredentialsGrant(config, { scope: 'openid email' });
    assert(tokens.id_token, 'no ID token');
    const claims = payload(tokens.id_token);
    assert(claims.sub === dexSubject(opts['client-id']) && claims.aud === opts['client-id'], JSON.stringify(claims));
    assert(claims.email_verified === false && claims.email === undefined, JSON.stringify(claims));
    // No browser session issued it (Dex HEAD: no sid, no auth_time).
    assert(claims.sid === undefined && claims.auth_time === undefined, JSON.stringify(claims));
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    return `userinfo sub=${info.sub}`;
  });
  await check('offline_access is invalid_scope', () =>
    expectOAuthError(client.clientCredentialsGrant(config, { scope: 'offline_access' }), 400, 'invalid_scope'),
  );
  await check('a wrong secret is invalid_client', async () =>
    expectOAuthError(client.clientCredentialsGrant(await discover('wrong'), {}), 401, 'invalid_client'),
  );
  if (opts['public-client-id']) {
    await check('a public client is unauthorized_client', async () => {
      const pub = await client.discovery(new URL(opts.issuer), opts['public-client-id'], undefined, client.None(), options);
      return expectOAuthError(client.clientCredentialsGrant(pub, {}), 400, 'unauthorized_client');
    });
  }
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
