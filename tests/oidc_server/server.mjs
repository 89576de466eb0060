// A real OpenID Connect provider (panva's certified oidc-provider) for tests/test_accounts_oidc.py and the page's
// logins in Chromium (tests/e2e/account_scenario.py).
//
//   node server.mjs PORT
//
// listens on 127.0.0.1:PORT with issuer http://127.0.0.1:PORT and prints "ready" once it does. Configured by
// environment variables holding JSON:
//   OIDC_CLIENTS   an array of client metadata (client_id, client_secret, redirect_uris, ...)
//   OIDC_ACCOUNTS  an object: login name -> that user's claims (email, email_verified, gender, ...)
// Logging in goes through the development interactions: POST /interaction/:uid with prompt=login and
// login=<login name>, then with prompt=consent. PKCE (S256) is required of every client.
//
// Runs on Node.js 18 (Debian 12's nodejs) and later: oidc-provider is pinned to 8.x, which supports Node 18 LTS
// (9.x wants Node 22, and its jose 6 fails on 18). The signing keys are made with node:crypto, not jose, which is
// only a dependency of oidc-provider's.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node server.mjs PORT');
  process.exit(2);
}
const clients = JSON.parse(process.env.OIDC_CLIENTS ?? '[]');
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS ?? '{}');

// A private JWK for signing with alg (RS256 or ES256).
function signingKey(alg) {
  const { privateKey } =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), kid: `test-${alg.toLowerCase()}`, alg, use: 'sig' };
}

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients,
  jwks: { keys: [signingKey('RS256'), signingKey('ES256')] },
  cookies: { keys: ['vchat-test-cookie-key'] },
  pkce: { methods: ['S256'], required: () => true },
  // address is given with the profile scope so that a client asking "openid email profile" sees a country
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'gender', 'birthdate', 'address'],
  },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    if (!Object.hasOwn(accounts, id)) {
      return undefined;
    }
    return { accountId: id, claims: async () => ({ ...accounts[id], sub: id }) };
  },
});

// A path the provider has no route for gets a plain "404 Not Found", as oidc-provider 9 answers it, rather than
// 8's 404 with an OAuth error {"error": "invalid_request"}, which a client reads as a refusal, not a missing page.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.status === 404 && ctx.body?.error_description?.startsWith('unrecognized route')) {
    ctx.body = 'Not Found';
    ctx.type = 'text/plain';
    ctx.status = 404;
  }
});

// Why a request was refused, in the log that the tests show when a login fails.
for (const event of ['authorization.error', 'grant.error', 'userinfo.error', 'server_error']) {
  provider.on(event, (ctx, error) => {
    console.log(`${event}: ${error.error ?? error.name}: ${error.error_description ?? error.message}`);
  });
}

provider.listen(port, '127.0.0.1', () => console.log('ready'));
