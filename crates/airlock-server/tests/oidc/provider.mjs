// A real OpenID Connect provider (node-oidc-provider) for Airlock's OIDC
// tests: listens on 127.0.0.1 on a free port, prints its issuer URL as one
// line on stdout once it serves, and issues RS256 JWT access tokens through
// the client_credentials grant. Each client stands for one person: the
// token carries that client's `preferred_username` and `groups`.
// `POST /test/rotate` puts a new signing key first (the old one is still
// published), as an identity provider's key rotation does.
//
// People also sign in interactively, as `airlock login` has them do: the
// public client `airlock-cli` uses the device flow (RFC 8628) or the
// authorization code with PKCE and a loopback redirect, gets refresh
// tokens and ID tokens that live 15 seconds (to exercise refreshing) with
// `auth_time`, `acr` and `amr`. The login page is this file's own:
// `POST /interaction/<uid>/login` with `login=<name>` and `mfa=yes|no`
// signs that person in (with a one-time password as second factor, or a
// password only) and grants the scopes asked for.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

// Stdout carries the issuer line only (the test stops reading it after
// that): the provider's own notices go to stderr.
console.log = console.error;
console.info = console.error;

const people = {
  alice: { groups: ['dev', 'Domain Users'], ttl: 600 },
  bob: { groups: ['dba', 'airlock-admins'], ttl: 600 },
  brief: { groups: ['dev'], ttl: 2 },
};

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = [signingKey()];
let issuer;

const CLI = 'airlock-cli';
const ACR_PASSWORD = 'urn:airlock:test:password';
const ACR_MFA = 'urn:airlock:test:mfa';

function provider() {
  return new Provider(issuer, {
    clients: [
      ...Object.keys(people).map((name) => ({
        client_id: name,
        client_secret: `${name}-secret`,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      })),
      {
        client_id: CLI,
        token_endpoint_auth_method: 'none',
        application_type: 'native',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
        response_types: ['code'],
        // Any port: RFC 8252 §7.3, which the provider follows for native
        // clients. The second is the web UI's, on the server under test.
        redirect_uris: ['http://127.0.0.1/callback', 'http://127.0.0.1/ui/oidc/callback'],
        require_auth_time: true,
      },
    ],
    jwks: { keys },
    cookies: { keys: ['airlock-test-cookies'] },
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, preferred_username: id, groups: people[id]?.groups ?? [] }),
    }),
    // `acr`, `amr` and `auth_time` in every ID token, as Okta, Entra ID
    // and Keycloak put them, not only when a request asks for them.
    claims: {
      iss: null, sid: null,
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: ['preferred_username', 'groups'],
    },
    // The ID token carries the profile claims Airlock reads.
    conformIdTokenClaims: false,
    acrValues: [ACR_PASSWORD, ACR_MFA],
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      IdToken: (ctx, token, client) => (client.clientId === CLI ? 15 : 3600),
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client) => (client.clientId === CLI ? undefined : 'https://airlock.test'),
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: 'api',
          audience: resource,
          accessTokenTTL: people[client.clientId]?.ttl ?? 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: (ctx, token) => ({
      preferred_username: token.clientId,
      groups: people[token.clientId]?.groups ?? [],
    }),
  });
}

async function body(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
  return new URLSearchParams(text);
}

// The login page: whoever is named signs in, with or without a second
// factor, and consents to what the client asked for.
async function interaction(req, res, uid, action) {
  if (req.method === 'GET' && !action) {
    res.setHeader('content-type', 'text/html');
    res.end(`<form method="post" action="/interaction/${uid}/login">`
      + '<input name="login"><select name="mfa"><option>no</option><option>yes</option></select>'
      + '<button>Sign in</button></form>');
    return;
  }
  if (req.method !== 'POST' || action !== 'login') {
    res.statusCode = 404;
    res.end();
    return;
  }
  const form = await body(req);
  const details = await current.interactionDetails(req, res);
  const accountId = form.get('login');
  const mfa = form.get('mfa') === 'yes';
  const grant = new current.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  await current.interactionFinished(req, res, {
    login: { accountId, acr: mfa ? ACR_MFA : ACR_PASSWORD, amr: mfa ? ['pwd', 'otp'] : ['pwd'] },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

let current;
const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/rotate') {
    keys = [signingKey(), ...keys];
    current = provider();
    res.end(keys[0].kid);
    return;
  }
  const login = req.url.match(/^\/interaction\/([^/?]+)(?:\/([a-z]+))?$/);
  if (login) {
    interaction(req, res, login[1], login[2]).catch((e) => {
      res.statusCode = 500;
      res.end(String(e));
    });
    return;
  }
  current.callback()(req, res);
});
server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  current = provider();
  process.stdout.write(`${issuer}\n`);
});
// The test closes our stdin when it is done (or dies): stop with it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
