import test from 'node:test';
import assert from 'node:assert/strict';
import { createCti, openCtiScriptUrl, recordUrl, readRecordPayload } from '../app/cti.js';

/** A recording stand-in for sforce.opencti, answering every callback with success. */
function recordingOpenCti({ fail = [] } = {}) {
  const calls = [];
  const listeners = {};
  const method = (name) => (args) => {
    calls.push([name, args]);
    if (typeof args.callback === 'function') {
      queueMicrotask(() => args.callback(fail.includes(name) ? { success: false, errors: [{ description: 'nope' }] } : { success: true, returnValue: { ok: name } }));
    }
  };
  const opencti = {
    SCREENPOP_TYPE: { SOBJECT: 'sobject', URL: 'url' },
    enableClickToDial: method('enableClickToDial'),
    screenPop: method('screenPop'),
    setSoftphonePanelVisibility: method('setSoftphonePanelVisibility'),
    setSoftphoneItemLabel: method('setSoftphoneItemLabel'),
    onClickToDial: (args) => {
      calls.push(['onClickToDial', args]);
      listeners.clickToDial = args.listener;
    },
    onNavigationChange: (args) => {
      calls.push(['onNavigationChange', args]);
      listeners.navigation = args.listener;
    },
  };
  return { opencti, calls, listeners };
}

function fakeDoc() {
  const appended = [];
  return {
    appended,
    createElement: (tag) => ({ tag }),
    head: { appendChild: (el) => appended.push(el) },
  };
}

test('a stand-in already on the page is used and no script is loaded', async () => {
  const { opencti, calls, listeners } = recordingOpenCti();
  const doc = fakeDoc();
  const cti = createCti({ win: { sforce: { opencti }, document: doc }, doc, sfdcIframeOrigin: 'https://acme.lightning.force.com' });
  assert.equal(await cti.ready, 'salesforce');
  assert.equal(cti.preinstalled, true);
  assert.equal(doc.appended.length, 0);

  const dialled = [];
  assert.equal(await cti.enableClickToDial((p) => dialled.push(p)), true);
  assert.deepEqual(calls.map(([n]) => n), ['onClickToDial', 'enableClickToDial']);
  assert.equal(typeof calls[1][1].callback, 'function', 'callback style, as Salesforce documents');
  listeners.clickToDial({ number: '(415) 555-0100', recordId: '003000000000001AAA', recordName: 'Ada', objectType: 'Contact' });
  assert.deepEqual(dialled, [{ number: '(415) 555-0100', recordId: '003000000000001AAA', recordName: 'Ada', objectType: 'Contact', url: null }]);
});

test('screenPop opens a record by id; panel visibility and label go through Open CTI', async () => {
  const { opencti, calls } = recordingOpenCti();
  const cti = createCti({ win: { sforce: { opencti } }, doc: fakeDoc() });
  await cti.screenPop('00T000000000001AAA');
  await cti.showPanel(true);
  await cti.setLabel('Incoming call');
  const pop = calls.find(([n]) => n === 'screenPop')[1];
  assert.equal(pop.type, 'sobject');
  assert.deepEqual(pop.params, { recordId: '00T000000000001AAA' });
  assert.equal(calls.find(([n]) => n === 'setSoftphonePanelVisibility')[1].visible, true);
  assert.equal(calls.find(([n]) => n === 'setSoftphoneItemLabel')[1].label, 'Incoming call');
});

test('a failed Open CTI callback rejects with its errors', async () => {
  const { opencti } = recordingOpenCti({ fail: ['screenPop'] });
  const cti = createCti({ win: { sforce: { opencti } }, doc: fakeDoc() });
  await assert.rejects(cti.screenPop('003000000000001AAA'), (e) => e.errors?.[0]?.description === 'nope');
});

test('navigation changes reach the listener', async () => {
  const { opencti, listeners } = recordingOpenCti();
  const cti = createCti({ win: { sforce: { opencti } }, doc: fakeDoc() });
  const seen = [];
  assert.equal(await cti.onNavigationChange((p) => seen.push(p)), true);
  listeners.navigation(JSON.stringify({ recordId: '500000000000001AAA', objectType: 'Case', recordName: '00001001', url: 'https://x/lightning/r/500000000000001AAA/view' }));
  assert.equal(seen[0].recordId, '500000000000001AAA');
  assert.equal(seen[0].objectType, 'Case');
});

test('inside Salesforce the library is loaded from sfdcIframeOrigin', async () => {
  const doc = fakeDoc();
  const win = { document: doc };
  const cti = createCti({ win, doc, sfdcIframeOrigin: 'https://acme.lightning.force.com' });
  assert.equal(doc.appended.length, 1);
  assert.equal(doc.appended[0].src, 'https://acme.lightning.force.com/support/api/62.0/lightning/opencti_min.js');
  const { opencti } = recordingOpenCti();
  win.sforce = { opencti };
  doc.appended[0].onload();
  assert.equal(await cti.ready, 'salesforce');
  assert.equal(cti.mode, 'salesforce');
});

test('without Salesforce, records open in a new tab', async () => {
  const opened = [];
  const doc = fakeDoc();
  const win = { document: doc, open: (...a) => opened.push(a) };
  const failed = createCti({ win, doc, sfdcIframeOrigin: 'https://acme.lightning.force.com', salesforceUrl: 'https://acme.lightning.force.com' });
  doc.appended[0].onerror();
  assert.equal(await failed.ready, 'standalone');
  assert.equal(await failed.showPanel(true), false);
  assert.equal(await failed.enableClickToDial(() => {}), false);
  await failed.screenPop('003000000000001AAA');
  assert.deepEqual(opened[0], ['https://acme.lightning.force.com/003000000000001AAA', '_blank', 'noopener']);

  const plain = createCti({ win, doc: fakeDoc(), sfdcIframeOrigin: null });
  assert.equal(await plain.ready, 'standalone');
  await plain.screenPop('003000000000001AAA');
  assert.equal(opened[1][0], 'https://login.salesforce.com/?startURL=%2F003000000000001AAA');
});

test('helpers: script URL, record URL, payload parsing', () => {
  assert.equal(openCtiScriptUrl('https://a.lightning.force.com', '61.0'), 'https://a.lightning.force.com/support/api/61.0/lightning/opencti_min.js');
  assert.equal(recordUrl('001000000000001AAA', 'https://a.my.salesforce.com'), 'https://a.my.salesforce.com/001000000000001AAA');
  assert.deepEqual(readRecordPayload('garbage'), { number: null, recordId: null, recordName: null, objectType: null, url: null });
});
