// Everything Salesforce Open CTI, behind one object.
//
// Inside Lightning, Salesforce opens the adapter page with
// `?sfdcIframeOrigin=<Lightning origin>`; the Open CTI library is then
// loaded from `${sfdcIframeOrigin}/support/api/<version>/lightning/opencti_min.js`.
// The one seam: when `window.sforce.opencti` already exists as the page
// loads (a test page's recording stand-in), it is used as it is and no
// script is loaded. Without Salesforce the page runs standalone and
// records open in a new tab.
//
// Open CTI methods are called callback-style (`{callback: r => …}`), as
// Salesforce documents them; each wrapper resolves with `r.returnValue`
// or rejects with `r.errors`.

export const OPENCTI_VERSION = '62.0';

export function openCtiScriptUrl(origin, version = OPENCTI_VERSION) {
  return `${origin}/support/api/${version}/lightning/opencti_min.js`;
}

/** Where a record opens outside Salesforce. */
export function recordUrl(recordId, salesforceUrl) {
  const id = encodeURIComponent(recordId);
  if (salesforceUrl) return `${salesforceUrl}/${id}`;
  return `https://login.salesforce.com/?startURL=${encodeURIComponent(`/${recordId}`)}`;
}

/** Pulls what the page needs out of an onClickToDial / onNavigationChange payload. */
export function readRecordPayload(payload) {
  // Lightning sends an object; some versions send it JSON-encoded.
  let p = payload;
  if (typeof p === 'string') {
    try {
      p = JSON.parse(p);
    } catch {
      p = {};
    }
  }
  p = p ?? {};
  return {
    number: typeof p.number === 'string' ? p.number : null,
    recordId: typeof p.recordId === 'string' && p.recordId ? p.recordId : null,
    recordName: typeof p.recordName === 'string' ? p.recordName : null,
    objectType: typeof p.objectType === 'string' ? p.objectType : null,
    url: typeof p.url === 'string' ? p.url : null,
  };
}

/**
 * @param {object} o
 * @param {Window} o.win
 * @param {Document} [o.doc]
 * @param {string|null} o.sfdcIframeOrigin (validated by config.js)
 * @param {string|null} [o.salesforceUrl] where records open standalone
 * @param {number} [o.loadTimeoutMs]
 */
export function createCti({ win, doc = win?.document, sfdcIframeOrigin = null, salesforceUrl = null, loadTimeoutMs = 15_000, version = OPENCTI_VERSION }) {
  let opencti = win?.sforce?.opencti ?? null;
  const preinstalled = !!opencti;
  let mode = opencti ? 'salesforce' : 'standalone';

  function call(method, args = {}) {
    return new Promise((resolve, reject) => {
      const fn = opencti?.[method];
      if (typeof fn !== 'function') {
        reject(new Error(`Open CTI has no ${method}`));
        return;
      }
      try {
        fn.call(opencti, {
          ...args,
          callback: (r) => {
            if (r && r.success === false) reject(Object.assign(new Error(`Open CTI ${method} failed`), { errors: r.errors }));
            else resolve(r?.returnValue);
          },
        });
      } catch (err) {
        reject(err);
      }
    });
  }

  function load() {
    if (preinstalled) return Promise.resolve('salesforce');
    if (!sfdcIframeOrigin || !doc) return Promise.resolve('standalone');
    return new Promise((resolve) => {
      const script = doc.createElement('script');
      let settled = false;
      const finish = (ok) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opencti = ok ? (win.sforce?.opencti ?? null) : null;
        mode = opencti ? 'salesforce' : 'standalone';
        resolve(mode);
      };
      const timer = setTimeout(() => finish(false), loadTimeoutMs);
      script.src = openCtiScriptUrl(sfdcIframeOrigin, version);
      script.async = true;
      script.onload = () => finish(true);
      script.onerror = () => finish(false);
      (doc.head ?? doc.documentElement).appendChild(script);
    });
  }

  const ready = load();

  const cti = {
    ready,
    get mode() {
      return mode;
    },
    get preinstalled() {
      return preinstalled;
    },

    /** Makes phone fields clickable; `listener` gets {number, recordId, recordName, objectType}. */
    async enableClickToDial(listener) {
      if ((await ready) !== 'salesforce') return false;
      if (typeof opencti.onClickToDial === 'function') {
        opencti.onClickToDial({ listener: (payload) => listener(readRecordPayload(payload)) });
      }
      await call('enableClickToDial');
      return true;
    },

    /** Follows the record the agent has open in Lightning. */
    async onNavigationChange(listener) {
      if ((await ready) !== 'salesforce' || typeof opencti.onNavigationChange !== 'function') return false;
      opencti.onNavigationChange({ listener: (payload) => listener(readRecordPayload(payload)) });
      return true;
    },

    /** Opens a record (a Contact, a Case, the call's Task…). */
    async screenPop(recordId) {
      if (!recordId) return false;
      if ((await ready) === 'salesforce') {
        const type = opencti.SCREENPOP_TYPE?.SOBJECT ?? 'sobject';
        await call('screenPop', { type, params: { recordId } });
        return true;
      }
      win?.open?.(recordUrl(recordId, salesforceUrl), '_blank', 'noopener');
      return true;
    },

    /** Shows (or hides) the utility bar panel, e.g. for an incoming call. */
    async showPanel(visible = true) {
      if ((await ready) !== 'salesforce') return false;
      await call('setSoftphonePanelVisibility', { visible });
      return true;
    },

    /** Sets the utility item's label where Open CTI offers it. */
    async setLabel(label) {
      if ((await ready) !== 'salesforce' || typeof opencti.setSoftphoneItemLabel !== 'function') return false;
      await call('setSoftphoneItemLabel', { label });
      return true;
    },
  };
  return cti;
}
