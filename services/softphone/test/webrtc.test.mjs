import test from 'node:test';
import assert from 'node:assert/strict';
import { createPhone, waitForIceGathering, offersTelephoneEvent } from '../app/webrtc.js';
import { createRegistration } from '../app/device.js';
import { fakePeerConnectionClass, fakeTimers, flush, FakeStream } from '../test-support/fakes.mjs';

const OFFER = 'v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n';

function setup({ gathering = 'complete', micFails = false } = {}) {
  const { FakePC, instances } = fakePeerConnectionClass({ gathering });
  const timers = fakeTimers();
  const posted = [];
  const legs = [];
  const warnings = [];
  const attached = [];
  const detached = [];
  const mics = [];
  const api = {
    answerLeg: async (legId, sdp) => {
      posted.push(['answer', legId, sdp]);
      return null;
    },
    offerLeg: async (legId, sdp) => {
      posted.push(['offer', legId, sdp]);
      return { sdp: 'v=0\r\na=gateway-answer\r\n' };
    },
  };
  const phone = createPhone({
    api,
    instance: 'inst-1',
    RTCPeerConnection: FakePC,
    getUserMedia: async (c) => {
      if (micFails) throw Object.assign(new Error('denied'), { name: 'NotAllowedError' });
      const s = new FakeStream();
      mics.push([c, s]);
      return s;
    },
    iceServers: () => [{ urls: 'stun:stun.example.com' }],
    onLeg: (l) => legs.push(l),
    onWarning: (w) => warnings.push(w),
    attachRemote: (id) => attached.push(id),
    detachRemote: (id) => detached.push(id),
    timers,
  });
  return { phone, instances, timers, posted, legs, warnings, attached, detached, mics };
}

const offer = (patch = {}) => ({ id: 'leg-1', call_id: 'c1', instance: 'inst-1', sdp: OFFER, auto_answer: true, ...patch });

test('offers for another page instance are ignored', () => {
  const { phone, instances, legs } = setup();
  assert.equal(phone.offer(offer({ instance: 'someone-else' })), 'ignored');
  assert.equal(instances.length, 0);
  assert.equal(legs.length, 0);
  assert.equal(phone.peerConnections.size, 0);
});

test('an auto-answer offer is answered at once with the microphone', async () => {
  const { phone, instances, posted, legs, mics } = setup();
  assert.equal(phone.offer(offer()), 'answering');
  await flush();
  const pc = instances[0];
  assert.deepEqual(pc.config, { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', iceServers: [{ urls: 'stun:stun.example.com' }] });
  assert.deepEqual(mics[0][0], { audio: { echoCancellation: true, noiseSuppression: true }, video: false });
  assert.equal(pc.senders.length, 1, 'the microphone track is sent');
  assert.deepEqual(pc.calls[0], ['setRemoteDescription', { type: 'offer', sdp: OFFER }]);
  assert.deepEqual(pc.calls.map(([n]) => n), ['setRemoteDescription', 'createAnswer', 'setLocalDescription']);
  assert.deepEqual(posted, [['answer', 'leg-1', 'v=0\r\na=answer\r\na=candidate:1\r\n']], 'the gathered answer is posted');
  assert.equal(phone.peerConnections.get('leg-1'), pc);
  assert.equal(legs[0].state, 'answering');
  pc.connectionState = 'connected';
  pc.emit('connectionstatechange');
  assert.equal(legs.at(-1).state, 'connected');
  assert.equal(phone.activeFor('c1').id, 'leg-1');
});

test('an offer without auto-answer waits for the agent', async () => {
  const { phone, instances, posted, legs } = setup();
  assert.equal(phone.offer(offer({ auto_answer: false })), 'pending');
  await flush();
  assert.equal(instances.length, 0, 'no PeerConnection before Answer');
  assert.deepEqual(legs.map((l) => [l.id, l.callId, l.state, l.autoAnswer]), [['leg-1', 'c1', 'offered', false]]);
  assert.equal(phone.pendingFor('c1').id, 'leg-1');
  assert.equal(await phone.answer('leg-1'), true);
  assert.equal(posted.length, 1);
  assert.equal(phone.pendingFor('c1'), null);
});

test('an offer for a call the agent asked for here is answered without ringing', async () => {
  const { phone, instances, posted } = setup();
  phone.expect('c1');
  assert.equal(phone.offer(offer({ auto_answer: false })), 'answering');
  await flush();
  assert.equal(instances.length, 1, 'answered at once');
  assert.equal(posted.length, 1);
  phone.expect('c1', false);
  assert.equal(phone.offer(offer({ id: 'leg-2', auto_answer: false })), 'pending', 'once the request is over, offers ring again');
});

test('ICE gathering is waited for at most 2 s', async () => {
  const { phone, timers, posted } = setup({ gathering: 'gathering' });
  phone.offer(offer());
  await flush();
  assert.equal(posted.length, 0, 'still gathering');
  timers.advance(1999);
  await flush();
  assert.equal(posted.length, 0);
  timers.advance(1);
  await flush();
  assert.equal(posted.length, 1);
});

test('waitForIceGathering ends on the null candidate', async () => {
  const { FakePC } = fakePeerConnectionClass();
  const pc = new FakePC({});
  pc.iceGatheringState = 'gathering';
  const timers = fakeTimers();
  const done = waitForIceGathering(pc, 2000, timers);
  pc.emit('icecandidate', { candidate: { candidate: 'a' } });
  pc.emit('icecandidate', { candidate: null });
  assert.equal(await done, 'complete');
  assert.equal(timers.pending(), 0, 'its timer is cleared');
});

test('webrtc.ended closes the PeerConnection and stops the microphone', async () => {
  const { phone, instances, legs, mics, detached } = setup();
  phone.offer(offer());
  await flush();
  assert.equal(phone.close('leg-1'), true);
  assert.equal(instances[0].closed, true);
  assert.equal(phone.peerConnections.size, 0);
  assert.equal(mics[0][1].tracks[0].stopped, true);
  assert.deepEqual(detached, ['leg-1']);
  assert.equal(legs.at(-1).state, 'closed');
  assert.equal(phone.close('leg-1'), false, 'closing twice is harmless');
});

test('a leg ended while the microphone prompt is open is not answered', async () => {
  const { phone, posted } = setup();
  phone.offer(offer({ auto_answer: false }));
  const answering = phone.answer('leg-1');
  phone.close('leg-1');
  assert.equal(await answering, false);
  await flush();
  assert.equal(posted.length, 0);
});

test('ICE restart on failure: new offer, POST …/offer, the gateway’s answer applied', async () => {
  const { phone, instances, posted, legs } = setup();
  phone.offer(offer());
  await flush();
  const pc = instances[0];
  pc.iceConnectionState = 'failed';
  pc.emit('iceconnectionstatechange');
  await flush();
  assert.deepEqual(pc.calls.find(([n]) => n === 'createOffer'), ['createOffer', { iceRestart: true }]);
  assert.deepEqual(posted[1], ['offer', 'leg-1', 'v=0\r\na=restart-offer\r\na=candidate:1\r\n']);
  assert.deepEqual(pc.calls.at(-1), ['setRemoteDescription', { type: 'answer', sdp: 'v=0\r\na=gateway-answer\r\n' }]);
  assert.ok(legs.some((l) => l.state === 'reconnecting'));
  pc.iceConnectionState = 'connected';
  pc.emit('iceconnectionstatechange');
  assert.equal(legs.at(-1).state, 'connected');
  await phone.restartAll();
  assert.equal(posted.filter(([k]) => k === 'offer').length, 2, 'the online event restarts live legs too');
});

test('keypad digits go in-band on a browser call, and nowhere else', async () => {
  const { phone, instances } = setup();
  assert.equal(phone.sendDtmf('c1', '5'), false, 'no leg: the caller uses the API');
  phone.offer(offer());
  await flush();
  assert.equal(phone.sendDtmf('c1', '#'), true);
  assert.equal(phone.sendDtmf('c1', 'x'), false);
  assert.deepEqual(instances[0].senders[0].dtmf.inserted, [['#', 100, 70]]);
  // Keys pressed while tones still play join the queue.
  assert.equal(phone.sendDtmf('c1', '1'), true);
  assert.deepEqual(instances[0].senders[0].dtmf.inserted.at(-1), ['#1', 100, 70]);
  assert.equal(phone.sendDtmf('other-call', '1'), false);
  assert.ok(offersTelephoneEvent(OFFER));
  assert.ok(!offersTelephoneEvent('v=0\r\na=rtpmap:0 PCMU/8000\r\n'));
});

test('without a microphone the call is still answered, with a warning', async () => {
  const { phone, posted, warnings, instances } = setup({ micFails: true });
  phone.offer(offer());
  await flush();
  assert.equal(posted.length, 1);
  assert.equal(instances[0].senders.length, 0);
  assert.match(warnings[0], /microphone/i);
});

test('dropPending and endCall forget a call’s legs', async () => {
  const { phone, legs } = setup();
  phone.offer(offer({ auto_answer: false }));
  phone.dropPending('c1');
  assert.equal(phone.pendingFor('c1'), null);
  assert.equal(legs.at(-1).state, 'closed');
  phone.offer(offer({ id: 'leg-2' }));
  await flush();
  phone.endCall('c1');
  assert.equal(phone.peerConnections.size, 0);
});

test('registration: POST now and every 25 s, DELETE on the way out', async () => {
  const timers = fakeTimers();
  const calls = [];
  const seen = [];
  const api = {
    registerSoftphone: async (instance) => {
      calls.push(['register', instance]);
      return { device_id: 'dev-browser', instance, expires_in_secs: 60 };
    },
    unregisterSoftphone: async (instance) => {
      calls.push(['unregister', instance]);
      return null;
    },
  };
  const reg = createRegistration({ api, instance: 'inst-1', onChange: (d) => seen.push(d), timers });
  reg.start();
  await flush();
  assert.deepEqual(seen.at(-1), { registered: true, deviceId: 'dev-browser', error: null, iceServers: [] });
  timers.advance(25_000);
  await flush();
  timers.advance(25_000);
  await flush();
  assert.equal(calls.filter(([k]) => k === 'register').length, 3);
  reg.stop({ unregister: true });
  assert.deepEqual(calls.at(-1), ['unregister', 'inst-1']);
  assert.equal(seen.at(-1).registered, false);
  timers.advance(100_000);
  await flush();
  assert.equal(calls.filter(([k]) => k === 'register').length, 3, 'no refresh after stop');
});

test('registration: a gateway without the endpoint says so and keeps trying', async () => {
  const timers = fakeTimers();
  let n = 0;
  const api = {
    registerSoftphone: async () => {
      n++;
      if (n === 1) throw Object.assign(new Error('nf'), { status: 404, detail: 'not found' });
      return { device_id: 'd2', instance: 'i', expires_in_secs: 60, ice_servers: [{ urls: 'turn:t.example.com' }] };
    },
    unregisterSoftphone: async () => null,
  };
  const seen = [];
  const reg = createRegistration({ api, instance: 'i', onChange: (d) => seen.push(d), timers });
  reg.start();
  await flush();
  assert.equal(seen.at(-1).registered, false);
  assert.match(seen.at(-1).error, /no browser phone/);
  timers.advance(25_000);
  await flush();
  assert.equal(seen.at(-1).registered, true);
  assert.deepEqual(seen.at(-1).iceServers, [{ urls: 'turn:t.example.com' }]);
});
