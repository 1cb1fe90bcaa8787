// A real OpenID Connect provider (node-oidc-provider) for Airlock's OIDC
// tests: listens on 127.0.0.1 on a free port, prints its issuer URL as one
// line on stdout once it serves, and issues RS256 JWT access tokens through
// the client_credentials grant. Each client stands for one person: the
// token carries that client's `preferred_username` and `groups`.
// `POST /test/rotate` puts a new signing key first (the old one is still
// published), as an identity provider's key rotation does.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

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

function provider() {
  return new Provider(issuer, {
    clients: Object.keys(people).map((name) => ({
      client_id: name,
      client_secret: `${name}-secret`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://airlock.test',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: 'api',
          audience: resource,
          accessTokenTTL: people[client.clientId].ttl,
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

let current;
const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/rotate') {
    keys = [signingKey(), ...keys];
    current = provider();
    res.end(keys[0].kid);
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
