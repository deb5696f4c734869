// A real OpenID Provider for the inbox sign-in tests: oidc-provider (a certified
// implementation) with its development login and consent pages.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"port": 1234, "issuer": "http://127.0.0.1:1234",
//          "clients": [{"client_id", "client_secret", "redirect_uris": [...]}],
//          "accounts": {"<login>": ["<group>", ...]}}
// The development login page takes any login (and any password): the login becomes the
// account's `sub`, its groups come from `accounts` (none for a login not listed). PKCE is
// required of every client; the `groups` claim is in the ID token.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const provider = new Provider(config.issuer, {
  clients: config.clients.map((client) => ({
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...client,
  })),
  claims: { openid: ['sub'], groups: ['groups'] },
  scopes: ['openid', 'groups'],
  // The groups claim goes into the ID token itself (the relying party reads no userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['labelgate-tests-only-cookie-key'] },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, groups: config.accounts[id] ?? [] };
      },
    };
  },
});

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
