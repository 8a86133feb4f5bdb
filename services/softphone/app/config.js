// Where the page finds the gateway and Salesforce, from its own URL.
//
// Query parameters:
//   gateway          absolute http(s) URL of the gateway (default: the page's origin)
//   sfdcIframeOrigin the Lightning origin Salesforce passes to an Open CTI adapter
//   salesforce_url   where record links open when running outside Salesforce
//   signin           "redirect" or "popup" (default: popup inside a frame, else redirect)

/** Host name suffixes an Open CTI script (or a record link) may come from. */
export const SALESFORCE_HOST_SUFFIXES = [
  '.force.com',
  '.salesforce.com',
  '.salesforce-setup.com',
  '.visualforce.com',
  '.cloudforce.com',
  '.sfcrmapps.cn',
  '.sfcrmproducts.cn',
];

/** The origin of `raw` if it is a Salesforce (or local development) origin, else null. */
export function salesforceOrigin(raw) {
  if (!raw) return null;
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  const host = url.hostname.toLowerCase();
  const local = host === 'localhost' || host === '127.0.0.1' || host === '[::1]';
  if (local && (url.protocol === 'http:' || url.protocol === 'https:')) return url.origin;
  if (url.protocol !== 'https:') return null;
  return SALESFORCE_HOST_SUFFIXES.some((s) => host.endsWith(s)) ? url.origin : null;
}

/** An http(s) base URL without a trailing slash, or null. */
export function gatewayBase(raw) {
  if (!raw) return null;
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  const path = url.pathname.replace(/\/+$/, '');
  return `${url.origin}${path}`;
}

/**
 * Reads the page's configuration from its URL.
 * @param {string} href the page's location.href
 * @param {{framed?: boolean}} [opts]
 */
export function readConfig(href, { framed = false } = {}) {
  const url = new URL(href);
  const p = url.searchParams;
  const problems = [];
  let gateway = url.origin;
  if (p.has('gateway')) {
    const base = gatewayBase(p.get('gateway'));
    if (base) gateway = base;
    else problems.push(`the gateway parameter "${p.get('gateway')}" is not an http(s) URL; using ${url.origin}`);
  }
  const sfdcIframeOrigin = salesforceOrigin(p.get('sfdcIframeOrigin'));
  if (p.get('sfdcIframeOrigin') && !sfdcIframeOrigin) {
    problems.push(`sfdcIframeOrigin "${p.get('sfdcIframeOrigin')}" is not a Salesforce origin; running without Salesforce`);
  }
  const signin = p.get('signin') === 'popup' || p.get('signin') === 'redirect' ? p.get('signin') : framed ? 'popup' : 'redirect';
  return {
    gateway,
    wsBase: gateway.replace(/^http/, 'ws'),
    sfdcIframeOrigin,
    salesforceUrl: salesforceOrigin(p.get('salesforce_url')) ?? sfdcIframeOrigin,
    returnTo: `${url.origin}${url.pathname}${url.search}`,
    signin,
    problems,
  };
}
