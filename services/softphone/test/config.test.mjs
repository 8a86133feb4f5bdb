import test from 'node:test';
import assert from 'node:assert/strict';
import { readConfig, salesforceOrigin, gatewayBase } from '../app/config.js';
import { parseFragment, createSessionStore, STORAGE_KEY } from '../app/session.js';
import { cleanDialString, isDialable, formatDuration, objectOfId } from '../app/util.js';

test('only Salesforce (or local) origins may supply the Open CTI script', () => {
  assert.equal(salesforceOrigin('https://acme.lightning.force.com/some/path'), 'https://acme.lightning.force.com');
  assert.equal(salesforceOrigin('https://acme--dev.sandbox.my.salesforce.com'), 'https://acme--dev.sandbox.my.salesforce.com');
  assert.equal(salesforceOrigin('http://localhost:9000'), 'http://localhost:9000');
  assert.equal(salesforceOrigin('https://evil.example.com'), null);
  assert.equal(salesforceOrigin('https://force.com.evil.example'), null);
  assert.equal(salesforceOrigin('http://acme.lightning.force.com'), null, 'plain http is refused off localhost');
  assert.equal(salesforceOrigin('javascript:alert(1)'), null);
  assert.equal(salesforceOrigin(null), null);
});

test('the gateway is the page origin unless the gateway parameter names another', () => {
  const same = readConfig('https://gw.example.com/softphone/?x=1#session=abc');
  assert.equal(same.gateway, 'https://gw.example.com');
  assert.equal(same.wsBase, 'wss://gw.example.com');
  assert.equal(same.returnTo, 'https://gw.example.com/softphone/?x=1', 'no fragment in return_to');
  assert.equal(same.signin, 'redirect');

  const other = readConfig('https://cdn.example.com/softphone/?gateway=http://10.0.0.5:8080/base/&sfdcIframeOrigin=https://acme.lightning.force.com', { framed: true });
  assert.equal(other.gateway, 'http://10.0.0.5:8080/base');
  assert.equal(other.wsBase, 'ws://10.0.0.5:8080/base');
  assert.equal(other.sfdcIframeOrigin, 'https://acme.lightning.force.com');
  assert.equal(other.salesforceUrl, 'https://acme.lightning.force.com');
  assert.equal(other.signin, 'popup', 'framed pages sign in through a popup');

  const bad = readConfig('https://gw.example.com/softphone/?gateway=ftp://x&sfdcIframeOrigin=https://evil.example');
  assert.equal(bad.gateway, 'https://gw.example.com');
  assert.equal(bad.sfdcIframeOrigin, null);
  assert.equal(bad.problems.length, 2);
  assert.equal(gatewayBase('not a url'), null);
});

test('the sign-in fragment gives a session or an error', () => {
  assert.deepEqual(parseFragment('#session=sbs_abc&expires_at=1700000000000'), { token: 'sbs_abc', expiresAt: 1700000000000 });
  assert.deepEqual(parseFragment('#error=not_linked&error_description=Salesforce%20user%20X%20is%20not%20linked'), { error: 'not_linked', description: 'Salesforce user X is not linked' });
  assert.equal(parseFragment(''), null);
  assert.equal(parseFragment('#other=1'), null);
});

test('the session store keeps the token until it expires', () => {
  const data = new Map();
  const storage = { getItem: (k) => data.get(k) ?? null, setItem: (k, v) => data.set(k, v), removeItem: (k) => data.delete(k) };
  let now = 1000;
  const store = createSessionStore(storage, () => now);
  assert.equal(store.load(), null);
  store.save({ token: 'sbs_1', expiresAt: 5000 });
  assert.deepEqual(store.load(), { token: 'sbs_1', expiresAt: 5000 });
  now = 5000;
  assert.equal(store.load(), null, 'expired');
  assert.equal(data.has(STORAGE_KEY), false, 'and forgotten');
  store.save({ token: 'sbs_2', expiresAt: null });
  store.clear();
  assert.equal(store.load(), null);
});

test('dial strings follow the gateway rules', () => {
  assert.equal(cleanDialString(' +1 (415) 555-0100 '), '+14155550100');
  assert.equal(cleanDialString('12+3abc*#'), '123*#');
  assert.ok(isDialable('+44 20 7123 4567'));
  assert.ok(isDialable('101'));
  assert.ok(!isDialable('+'));
  assert.ok(!isDialable('1+2'));
  assert.ok(!isDialable(''));
  assert.equal(formatDuration(65_000), '1:05');
  assert.equal(formatDuration(3_725_000), '1:02:05');
  assert.equal(objectOfId('003000000000001AAA'), 'Contact');
  assert.equal(objectOfId('500000000000001'), 'Case');
  assert.equal(objectOfId('003'), null);
});
