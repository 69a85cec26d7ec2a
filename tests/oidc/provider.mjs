// A throwaway OpenID provider for scopegate's interop tests.
//
// It serves one confidential client that may only use the client_credentials
// grant, and issues RS256-signed JWT access tokens (typ "at+jwt") for a single
// resource server. See README.md in this folder for the environment it reads.
//
// Contract with the test harness:
//   * stdout carries exactly one line, `listening on https://localhost:PORT`,
//     once the server accepts requests. Everything else goes to stderr.
//   * configuration errors print one line on stderr and exit with code 2.
//   * SIGTERM / SIGINT close the server and exit 0.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

const EXIT_CONFIG = 2;

function die(message) {
  process.stderr.write(`oidc provider: ${message}\n`);
  process.exit(EXIT_CONFIG);
}

// oidc-provider prints its notices with console.info (stdout). Keep stdout
// reserved for the single "listening on" line the harness waits for.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

function requireEnv(name) {
  const value = process.env[name];
  if (value === undefined || value.trim() === '') {
    die(`missing environment variable ${name}`);
  }
  return value.trim();
}

function readPem(envName) {
  const path = requireEnv(envName);
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (err) {
    return die(`cannot read ${envName}=${path}: ${err.code || err.message}`);
  }
}

function parsePort(raw) {
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) {
    die(`OIDC_PORT must be an integer in 0..65535, got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

function parseResource(raw) {
  const url = URL.parse(raw);
  if (!url || url.hash || raw.includes('#')) {
    die(`OIDC_RESOURCE must be an absolute URI without a fragment, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

function parseTtl(raw) {
  if (raw === undefined || raw.trim() === '') return 300;
  if (!/^\d+$/.test(raw.trim()) || Number(raw) < 1) {
    die(`OIDC_TOKEN_TTL must be a positive integer (seconds), got ${JSON.stringify(raw)}`);
  }
  return Number(raw);
}

const settings = {
  cert: readPem('OIDC_CERT_FILE'),
  key: readPem('OIDC_KEY_FILE'),
  port: parsePort(requireEnv('OIDC_PORT')),
  resource: parseResource(requireEnv('OIDC_RESOURCE')),
  scopes: [...new Set(requireEnv('OIDC_SCOPES').split(/\s+/).filter(Boolean))],
  clientId: requireEnv('OIDC_CLIENT_ID'),
  clientSecret: requireEnv('OIDC_CLIENT_SECRET'),
  tokenTtl: parseTtl(process.env.OIDC_TOKEN_TTL),
};

// A fresh RS256 signing key for every run, so the provider never falls back
// to the development keys bundled with oidc-provider.
function makeSigningJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint of the public members, used as the key id.
  const canonical = JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n });
  const kid = crypto.createHash('sha256').update(canonical).digest('base64url');
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

// Until the provider exists, answer 503 rather than leaving requests hanging.
let handler = (req, res) => {
  res.writeHead(503, { 'content-type': 'text/plain' });
  res.end('starting\n');
};

let server;
try {
  server = https.createServer({ cert: settings.cert, key: settings.key }, (req, res) => handler(req, res));
} catch (err) {
  die(`invalid TLS certificate or key: ${err.message}`);
}

server.on('error', (err) => die(`cannot listen on 127.0.0.1:${settings.port}: ${err.code || err.message}`));
server.on('tlsClientError', () => {}); // e.g. a client that does not trust our CA; not our concern

await new Promise((resolve) => server.listen(settings.port, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `https://localhost:${port}`;
const issuerHost = `localhost:${port}`;

// Imported only now: on Node < 22 the package prints an "unsupported runtime"
// warning at import time, which should not precede a configuration error.
const { Provider, errors } = await import('oidc-provider');

const resourceServer = {
  scope: settings.scopes.join(' '),
  audience: settings.resource,
  accessTokenTTL: settings.tokenTtl,
  accessTokenFormat: 'jwt',
  jwt: { sign: { alg: 'RS256' } },
};

const provider = new Provider(issuer, {
  jwks: { keys: [makeSigningJwk()] },
  clients: [
    {
      client_id: settings.clientId,
      client_secret: settings.clientSecret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Advertised in discovery as scopes_supported.
  scopes: ['openid', ...settings.scopes],
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  // No browser clients here: requests carrying an Origin header are refused.
  clientBasedCORS: () => false,
  // Plain-text error pages (only the browser-facing endpoints render HTML).
  renderError: (ctx, out) => {
    ctx.type = 'text/plain';
    ctx.body = `${out.error}: ${out.error_description ?? ''}\n`;
  },
  ttl: {
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? settings.tokenTtl,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A token request without `resource` is treated as one for OIDC_RESOURCE.
      defaultResource: (ctx, client, oneOf) => oneOf ?? settings.resource,
      // Only relevant to grants that carry a previously granted resource
      // (authorization_code, refresh_token); client_credentials never consults it.
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== settings.resource) {
          throw new errors.InvalidTarget(`unknown resource indicator ${resourceIndicator}`);
        }
        return resourceServer;
      },
    },
  },
});

provider.on('server_error', (ctx, err) => {
  process.stderr.write(`oidc provider: server_error: ${err?.stack || err}\n`);
});

const callback = provider.callback();
handler = (req, res) => {
  // Endpoint URLs in metadata are built from the Host header; pin it to the
  // issuer's host so that reaching us as 127.0.0.1 still yields same-origin URLs.
  req.headers.host = issuerHost;
  callback(req, res);
};

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`listening on ${issuer}\n`);
