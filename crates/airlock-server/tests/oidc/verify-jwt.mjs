// An application checking an Airlock elevation claim with an ordinary JWT
// library (jose), as Airlock's docs tell applications to: the key from the
// server's JWK Set, the algorithm pinned to EdDSA, the issuer and (when
// given) the audience compared. Usage:
//   node verify-jwt.mjs JWKS_URL TOKEN ISSUER [AUDIENCE]
// Prints the verified header and claims as one JSON line, or exits 1 with
// jose's reason.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, token, issuer, audience] = process.argv.slice(2);
try {
  const keys = createRemoteJWKSet(new URL(jwksUrl));
  const { payload, protectedHeader } = await jwtVerify(token, keys, {
    algorithms: ['EdDSA'],
    issuer,
    ...(audience ? { audience } : {}),
  });
  console.log(JSON.stringify({ header: protectedHeader, claims: payload }));
} catch (e) {
  console.error(`refused: ${e.code ?? ''} ${e.message}`);
  process.exit(1);
}
