/**
 * Plays the human in a device login: opens `verification_uri_complete` and submits the provider's own HTML
 * forms (user code, confirmation, dev login, consent) with plain fetch, a cookie jar and hand-followed redirects.
 * Works with the dev issuer's pages (src/dev/oidc-issuer.ts), which any login name gets through.
 */

interface Cookie {
  name: string;
  value: string;
  path: string;
}

class CookieJar {
  readonly #cookies = new Map<string, Cookie>();

  store(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = value === '';
      for (const attribute of attributes) {
        const [k, v = ''] = attribute.split('=');
        const key = k.toLowerCase();
        if (key === 'path') path = v || '/';
        else if (key === 'max-age' && Number(v) <= 0) expired = true;
        else if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const id = `${name};${path}`;
      if (expired) this.#cookies.delete(id);
      else this.#cookies.set(id, { name, value, path });
    }
  }

  header(url: URL): string {
    return [...this.#cookies.values()]
      .filter((c) => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }
}

interface Form {
  action: string;
  method: string;
  fields: Map<string, string>;
}

const MAX_STEPS = 20;

export async function completeDeviceLogin(verificationUriComplete: string, login: string): Promise<void> {
  const jar = new CookieJar();
  let page = await request(jar, new URL(verificationUriComplete), { method: 'GET' });
  for (let step = 0; step < MAX_STEPS; step++) {
    if (page.status >= 400) throw new Error(`device login failed: HTTP ${page.status} at ${page.url.pathname}: ${textOf(page.body)}`);
    const form = firstForm(page.body, page.url);
    if (!form) {
      if (/signed in|success/i.test(page.body)) return;
      throw new Error(`device login stuck at ${page.url.pathname}: ${textOf(page.body)}`);
    }
    if (form.fields.has('login')) {
      form.fields.set('login', login);
      form.fields.set('password', 'any');
    }
    form.fields.delete('abort');
    page = await request(jar, new URL(form.action), {
      method: form.method,
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams([...form.fields]).toString(),
    });
  }
  throw new Error(`device login did not finish within ${MAX_STEPS} pages`);
}

/** One request plus every redirect after it, carrying the cookie jar. */
async function request(jar: CookieJar, url: URL, init: RequestInit): Promise<{ url: URL; status: number; body: string }> {
  for (let hops = 0; hops < 10; hops++) {
    const cookie = jar.header(url);
    const response = await fetch(url, {
      ...init,
      redirect: 'manual',
      headers: { ...(init.headers as Record<string, string> | undefined), ...(cookie ? { cookie } : {}) },
    });
    jar.store(response);
    const location = response.headers.get('location');
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel();
      url = new URL(location, url);
      init = { method: 'GET' };
      continue;
    }
    return { url, status: response.status, body: await response.text() };
  }
  throw new Error(`too many redirects from ${url.href}`);
}

function firstForm(html: string, base: URL): Form | undefined {
  const match = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!match) return undefined;
  const [, attributes, inner] = match;
  const fields = new Map<string, string>();
  for (const input of inner.matchAll(/<input\b([^>]*)>/gi)) {
    const name = attribute(input[1], 'name');
    if (name) fields.set(name, attribute(input[1], 'value') ?? '');
  }
  return {
    action: new URL(attribute(attributes, 'action') ?? base.href, base).href,
    method: (attribute(attributes, 'method') ?? 'GET').toUpperCase(),
    fields,
  };
}

function attribute(tag: string, name: string): string | undefined {
  const m = new RegExp(`\\b${name}\\s*=\\s*("([^"]*)"|'([^']*)')`, 'i').exec(tag);
  if (!m) return undefined;
  return decodeEntities(m[2] ?? m[3] ?? '');
}

function decodeEntities(s: string): string {
  return s
    .replace(/&#(\d+);/g, (_, d: string) => String.fromCharCode(Number(d)))
    .replace(/&#x([0-9a-f]+);/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

function textOf(html: string): string {
  return html.replace(/<style[\s\S]*?<\/style>|<script[\s\S]*?<\/script>/gi, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
}

/**
 * The whole device login as `login`, in-process: openid-client's device flow against the dev issuer, with the
 * user played in the provider's pages. Returns the token set the CLI would store.
 */
export async function deviceLoginAs(issuer: { issuer: string; cliClientId: string }, login: string, scopes = ['openid', 'offline_access']) {
  const { deviceLogin } = await import('../../src/auth/oidc.js');
  let userDone: Promise<void> | undefined;
  const tokens = await deviceLogin({
    issuer: issuer.issuer,
    clientId: issuer.cliClientId,
    scopes,
    pollIntervalSeconds: 1,
    onPrompt: (p) => {
      userDone = completeDeviceLogin(p.verificationUriComplete!, login);
    },
  });
  await userDone;
  return tokens;
}
