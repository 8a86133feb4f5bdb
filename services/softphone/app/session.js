// The agent's session token: read from the sign-in redirect's fragment,
// kept in sessionStorage, dropped when it expires or the gateway says 401.

export const STORAGE_KEY = 'switchboard.session';

/**
 * Parses `#session=…&expires_at=…` or `#error=…&error_description=…`.
 * @returns {null | {token: string, expiresAt: number} | {error: string, description: string}}
 */
export function parseFragment(hash) {
  if (!hash || hash.length < 2) return null;
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const token = params.get('session');
  if (token) {
    const expiresAt = Number(params.get('expires_at'));
    return { token, expiresAt: Number.isFinite(expiresAt) && expiresAt > 0 ? expiresAt : null };
  }
  const error = params.get('error');
  if (error) return { error, description: params.get('error_description') || error };
  return null;
}

/** A store of the session in `storage` (sessionStorage in the page). */
export function createSessionStore(storage, now = () => Date.now()) {
  return {
    load() {
      let raw = null;
      try {
        raw = storage.getItem(STORAGE_KEY);
      } catch {
        return null;
      }
      if (!raw) return null;
      try {
        const s = JSON.parse(raw);
        if (typeof s?.token !== 'string' || !s.token) return null;
        if (typeof s.expiresAt === 'number' && s.expiresAt <= now()) {
          storage.removeItem(STORAGE_KEY);
          return null;
        }
        return { token: s.token, expiresAt: s.expiresAt ?? null };
      } catch {
        return null;
      }
    },
    save(session) {
      try {
        storage.setItem(STORAGE_KEY, JSON.stringify({ token: session.token, expiresAt: session.expiresAt ?? null }));
      } catch {
        // Storage refused (private mode, partitioned frame): the session lives in memory only.
      }
    },
    clear() {
      try {
        storage.removeItem(STORAGE_KEY);
      } catch {
        // nothing to clear
      }
    },
  };
}

/** The message a sign-in popup posts to the softphone that opened it. */
export const POPUP_MESSAGE = 'switchboard.signin';
