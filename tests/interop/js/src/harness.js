// The page side of the interop harness: one matrix-js-sdk client (the owner's phone, or a stranger's) with
// legacy 1:1 calls (MatrixCall), as Element Web/Desktop uses it, and MatrixRTC calls as Element Call makes them
// (rtc.js: js-sdk's MatrixRTC session plus livekit-client, the rtc* methods below). Bundled by build.mjs into
// dist/harness.js and driven from the test process through window.H (see ../../harness.py).
//
// Everything the tests read comes from here: each call's state, its hangup party and reason, the m.call.* events
// the room carried (decrypted where the room is encrypted), and what arrived over the media path (getStats of
// the remote video and audio, plus the remote audio through an <audio> element and a WebAudio analyser:
// Chromium decodes remote audio only when it is played).

import * as sdk from "matrix-js-sdk";
import { CallEventHandlerEvent } from "matrix-js-sdk/lib/webrtc/callEventHandler.js";

import { makeRtc } from "./rtc.js";

// --- loopback only ---------------------------------------------------------------------------------------------
// Media stays on 127.0.0.1. Chromium (with --allow-loopback-in-peer-connection) gathers on loopback as well as on
// the machine's other interfaces; what js-sdk signals to the door is cut down to the loopback candidates here, in the
// icecandidate events and in the SDP of localDescription, and the door offers only 127.0.0.1 itself. Chromium may
// still check and send from a socket bound to another local address, but only towards the door's 127.0.0.1, so no
// packet leaves the machine. This shapes only what the peer learns, not how js-sdk handles calls.
const KEEP_CANDIDATE = /^(a=)?candidate:\S+ \d+ \S+ \d+ 127\.0\.0\.1 /i;

function keepCandidate(candidate) {
    return !harnessOptions.loopback || !candidate || !candidate.candidate || KEEP_CANDIDATE.test(candidate.candidate);
}

// With trickleOnly, gathering is made to look slow (as with STUN/TURN servers far away): no candidate is in the
// SDP js-sdk sends, and every one travels later in m.call.candidates, which the door must then take.
// With loopback false (the network-namespace tests), every candidate is signalled: the page then runs on a test
// host behind its own NAT and js-sdk's host, server-reflexive and relay candidates all go to the door, as on a phone.
const harnessOptions = { trickleOnly: false, loopback: true };
const TRICKLE_DELAY_MS = 600;

function loopbackSdp(sdp) {
    return sdp
        .split("\r\n")
        .filter((line) => !(line.startsWith("a=candidate:") || line === "a=end-of-candidates")
                          || (!harnessOptions.trickleOnly && (!harnessOptions.loopback || KEEP_CANDIDATE.test(line))))
        .join("\r\n");
}

const NativePeerConnection = window.RTCPeerConnection;
const allConnections = [];

class LoopbackPeerConnection extends NativePeerConnection {
    constructor(config) {
        super(config);
        allConnections.push(this);
    }

    get localDescription() {
        const description = super.localDescription;
        if (!description) return description;
        return new RTCSessionDescription({ type: description.type, sdp: loopbackSdp(description.sdp) });
    }

    addEventListener(type, listener, options) {
        if (type !== "icecandidate" && type !== "icegatheringstatechange") {
            return super.addEventListener(type, listener, options);
        }
        const wrapped = (event) => {
            if (type === "icecandidate" && !keepCandidate(event.candidate)) return;
            // Slow gathering: candidates and the gathering state reach js-sdk late, in their order, after it has
            // sent its offer or answer (200 ms), so it trickles them all and then the end-of-candidates marker.
            if (harnessOptions.trickleOnly) setTimeout(() => listener.call(this, event), TRICKLE_DELAY_MS);
            else listener.call(this, event);
        };
        listener.__loopbackWrapped = wrapped;
        return super.addEventListener(type, wrapped, options);
    }

    removeEventListener(type, listener, options) {
        return super.removeEventListener(type, listener?.__loopbackWrapped ?? listener, options);
    }
}
window.RTCPeerConnection = LoopbackPeerConnection;

// --- state -----------------------------------------------------------------------------------------------------

const started = performance.now();
const now = () => Math.round(performance.now() - started);

let client = null;
const calls = new Map(); // callId -> record
const roomEvents = []; // every m.call.* event seen in the timeline, in order
const log = []; // harness-level notes

function note(what, detail = {}) {
    log.push({ t: now(), what, ...detail });
}

// MatrixRTC (Element Call's calls: js-sdk's MatrixRTC session plus livekit-client): the rtc* methods of H, in rtc.js
const RTC = makeRtc({ getClient: () => client, now, note });

function record(call, direction) {
    let rec = calls.get(call.callId);
    if (rec) return rec;
    rec = {
        call,
        callId: call.callId,
        roomId: call.roomId,
        direction,
        created: now(),
        states: [{ state: call.state, t: now() }],
        ended: null,
        hangupParty: null,
        hangupReason: null,
        errors: [],
        media: null, // {audio, analyser, ...} once a remote feed arrived
        connectedAt: null,
        replacedBy: null,
    };
    calls.set(call.callId, rec);
    call.on(sdk.CallEvent.State, (state) => {
        rec.states.push({ state, t: now() });
        if (state === "connected" && rec.connectedAt === null) rec.connectedAt = now();
    });
    call.on(sdk.CallEvent.Hangup, () => {
        rec.ended = now();
        rec.hangupParty = call.hangupParty ?? null;
        rec.hangupReason = call.hangupReason ?? null;
        detachMedia(rec);
    });
    call.on(sdk.CallEvent.Error, (error) => {
        rec.errors.push({ t: now(), code: error?.code ?? null, message: String(error?.message ?? error) });
    });
    call.on(sdk.CallEvent.Replaced, (newCall) => {
        rec.replacedBy = newCall.callId;
        record(newCall, "inbound");
    });
    call.on(sdk.CallEvent.FeedsChanged, () => attachMedia(rec));
    return rec;
}

// --- media: play the remote stream, analyse its audio ----------------------------------------------------------

let audioContext = null;

function attachMedia(rec) {
    const feed = rec.call.getRemoteFeeds().find((f) => f.purpose === "m.usermedia") ?? rec.call.getRemoteFeeds()[0];
    if (feed) attachStream(rec, feed.stream);
}

function trackCounts(stream) {
    return `${stream.getAudioTracks().length}/${stream.getVideoTracks().length}`;
}

function attachStream(rec, stream) {
    if (rec.media && !rec.media.closed && rec.media.stream === stream && rec.media.tracks === trackCounts(stream)) return;
    detachMedia(rec);
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.srcObject = stream;
    document.body.appendChild(audio);
    audio.play().catch((err) => note("audio play failed", { error: String(err) }));
    let video = null;
    if (stream.getVideoTracks().length) {
        video = document.createElement("video");
        video.autoplay = true;
        video.muted = true;
        video.playsInline = true;
        video.srcObject = stream;
        document.body.appendChild(video);
        video.play().catch((err) => note("video play failed", { error: String(err) }));
    }
    const media = { stream, audio, video, analyser: null, peakRms: 0, rmsSamples: 0, loudSamples: 0, videoFrames: 0,
                    tracks: trackCounts(stream) };
    if (stream.getAudioTracks().length) {
        audioContext ??= new AudioContext();
        audioContext.resume().catch(() => {});
        const source = audioContext.createMediaStreamSource(stream);
        const analyser = audioContext.createAnalyser();
        analyser.fftSize = 2048;
        source.connect(analyser);
        media.analyser = analyser;
        media.source = source;
        const buffer = new Float32Array(analyser.fftSize);
        media.timer = setInterval(() => {
            analyser.getFloatTimeDomainData(buffer);
            let sum = 0;
            for (const v of buffer) sum += v * v;
            const rms = Math.sqrt(sum / buffer.length);
            media.rmsSamples += 1;
            if (rms > 0.01) media.loudSamples += 1;
            media.peakRms = Math.max(media.peakRms, rms);
        }, 50);
    }
    if (video && "requestVideoFrameCallback" in video) {
        const onFrame = (_now, metadata) => {
            media.videoFrames += 1;
            media.lastFrameSize = [metadata.width, metadata.height];
            if (!media.closed) video.requestVideoFrameCallback(onFrame);
        };
        video.requestVideoFrameCallback(onFrame);
    }
    rec.media = media;
    note("remote feed attached", { callId: rec.callId, audio: stream.getAudioTracks().length,
                                   video: stream.getVideoTracks().length });
}

function detachMedia(rec) {
    const media = rec.media;
    if (!media || media.closed) return;
    media.closed = true;
    clearInterval(media.timer);
    media.source?.disconnect();
    for (const el of [media.audio, media.video]) {
        if (el) {
            el.srcObject = null;
            el.remove();
        }
    }
}

async function mediaStats(rec) {
    const pc = rec.call ? rec.call.peerConn : rec.pc;
    const out = {
        video: null, audio: null, audioOut: null, videoOut: null, pair: null,
        element: rec.media ? {
            peakRms: rec.media.peakRms, loudSamples: rec.media.loudSamples, rmsSamples: rec.media.rmsSamples,
            videoFrames: rec.media.videoFrames, lastFrameSize: rec.media.lastFrameSize ?? null,
            videoSize: rec.media.video ? [rec.media.video.videoWidth, rec.media.video.videoHeight] : null,
        } : null,
    };
    if (!pc) return out;
    let report;
    try {
        report = await pc.getStats();
    } catch (err) {
        out.error = String(err);
        return out;
    }
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
            out.video = {
                framesDecoded: s.framesDecoded ?? 0, framesReceived: s.framesReceived ?? 0,
                frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, packets: s.packetsReceived ?? 0,
                codec: byId.get(s.codecId)?.mimeType ?? null, decoder: s.decoderImplementation ?? null,
                keyFramesDecoded: s.keyFramesDecoded ?? 0, pliCount: s.pliCount ?? 0, firCount: s.firCount ?? 0,
                nackCount: s.nackCount ?? 0, freezeCount: s.freezeCount ?? 0, packetsLost: s.packetsLost ?? 0,
            };
        } else if (s.type === "inbound-rtp" && s.kind === "audio") {
            out.audio = {
                packets: s.packetsReceived ?? 0, audioLevel: s.audioLevel ?? 0,
                totalAudioEnergy: s.totalAudioEnergy ?? 0, totalSamplesDuration: s.totalSamplesDuration ?? 0,
                codec: byId.get(s.codecId)?.mimeType ?? null,
            };
        } else if (s.type === "outbound-rtp" && s.kind === "audio") {
            out.audioOut = { packets: s.packetsSent ?? 0, bytes: s.bytesSent ?? 0 };
        } else if (s.type === "outbound-rtp" && s.kind === "video") {
            out.videoOut = { packets: s.packetsSent ?? 0, frames: s.framesEncoded ?? 0 };
        } else if (s.type === "transport" && s.selectedCandidatePairId) {
            const pair = byId.get(s.selectedCandidatePairId);
            const local = pair && byId.get(pair.localCandidateId);
            const remote = pair && byId.get(pair.remoteCandidateId);
            out.pair = pair ? {
                state: pair.state,
                local: local ? `${local.address ?? local.ip}:${local.port} ${local.candidateType}` : null,
                remote: remote ? `${remote.address ?? remote.ip}:${remote.port} ${remote.candidateType}` : null,
            } : null;
        }
    });
    return out;
}

function describe(rec) {
    const call = rec.call;
    return {
        callId: rec.callId,
        roomId: rec.roomId,
        direction: rec.direction,
        type: call.type ?? null,
        state: call.state,
        states: rec.states,
        created: rec.created,
        connectedAt: rec.connectedAt,
        ended: rec.ended,
        // js-sdk sets these before it emits the hangup event, so read them from the call itself
        hangupParty: call.hangupParty ?? rec.hangupParty,
        hangupReason: call.hangupReason ?? rec.hangupReason,
        errors: rec.errors,
        invitee: call.invitee ?? null,
        opponentPartyId: call.opponentPartyId ?? null,
        opponentVersion: call.opponentVersion ?? null,
        replacedBy: rec.replacedBy,
        remoteFeeds: call.getRemoteFeeds().map((f) => ({ purpose: f.purpose, streamId: f.stream.id,
                                                         audio: f.stream.getAudioTracks().length,
                                                         video: f.stream.getVideoTracks().length })),
        signalingState: call.peerConn?.signalingState ?? null,
        remoteOnHold: call.peerConn ? call.isRemoteOnHold() : null,
        localOnHold: call.peerConn ? call.isLocalOnHold() : null,
        iceConnectionState: call.peerConn?.iceConnectionState ?? null,
    };
}

function need(callId) {
    const rec = calls.get(callId);
    if (!rec) throw new Error(`no call ${callId}; known: ${[...calls.keys()].join(", ") || "none"}`);
    return rec;
}


// --- a version-0 peer: raw m.call.* events (version 0, no party_id) and a plain RTCPeerConnection -------------
// What an old client sends: no party_id, no select_answer/reject/negotiate, every candidate in the SDP. js-sdk's
// own call handling in this page is not used for these calls (it may still see the door's invite ring).

const rawCalls = new Map(); // callId -> {callId, roomId, pc, media, direction, state, events, ...}

function waitForGathering(pc, ms = 3000) {
    return new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") return resolve();
        const timer = setTimeout(resolve, ms);
        pc.addEventListener("icegatheringstatechange", () => {
            if (pc.iceGatheringState === "complete") {
                clearTimeout(timer);
                resolve();
            }
        });
    });
}

async function rawPeer(rec, video) {
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: [] });
    rec.pc = pc;
    pc.addEventListener("track", (event) => attachStream(rec, event.streams[0] ?? new MediaStream([event.track])));
    pc.addEventListener("connectionstatechange", () => {
        rec.connectionStates.push({ state: pc.connectionState, t: now() });
        if (pc.connectionState === "connected" && rec.connectedAt === null) rec.connectedAt = now();
    });
    rec.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
    for (const track of rec.localStream.getTracks()) pc.addTrack(track, rec.localStream);
    return pc;
}

function newRawRecord(callId, roomId, direction) {
    const rec = { callId, roomId, direction, pc: null, media: null, state: "new", connectedAt: null,
                  connectionStates: [], received: [], ended: null, hangupReason: null, created: now() };
    rawCalls.set(callId, rec);
    return rec;
}

function rawEnd(rec, reason, by) {
    if (rec.state === "ended") return;
    rec.state = "ended";
    rec.ended = now();
    rec.hangupReason = reason;
    rec.hangupParty = by;
    detachMedia(rec);
    rec.localStream?.getTracks().forEach((t) => t.stop());
    rec.pc?.close();
}

async function rawOnEvent(entry) {
    if (entry.sender === client.getUserId()) return;
    const content = entry.content ?? {};
    const rec = rawCalls.get(content.call_id);
    if (entry.type === "m.call.invite") {
        if (!rec) rawInvites.set(content.call_id, entry);
        return;
    }
    if (!rec || rec.state === "ended") return;
    rec.received.push({ type: entry.type, t: entry.t, content });
    if (entry.type === "m.call.answer" && rec.direction === "outbound" && rec.state === "invited") {
        rec.state = "answered";
        await rec.pc.setRemoteDescription(content.answer);
    } else if (entry.type === "m.call.candidates") {
        for (const c of content.candidates ?? []) {
            if (!c.candidate) continue; // end-of-candidates: every candidate came in the SDP anyway
            try {
                await rec.pc.addIceCandidate(c);
            } catch (err) {
                note("raw candidate refused", { error: String(err) });
            }
        }
    } else if (entry.type === "m.call.hangup" || entry.type === "m.call.reject") {
        rawEnd(rec, content.reason ?? (entry.type === "m.call.reject" ? "reject" : null), "remote");
    }
}

const rawInvites = new Map(); // invites seen, by call id, for rawAnswer

const RAW = {
    async rawCall(roomId, { video = true, lifetime = 60000 } = {}) {
        const callId = `${Date.now()}raw${Math.random().toString(36).slice(2, 10)}`;
        const rec = newRawRecord(callId, roomId, "outbound");
        const pc = await rawPeer(rec, video);
        await pc.setLocalDescription(await pc.createOffer());
        await waitForGathering(pc);
        const offer = pc.localDescription;
        rec.state = "invited";
        rec.invitedAt = now();
        await client.sendEvent(roomId, "m.call.invite", {
            call_id: callId, version: 0, lifetime, offer: { type: offer.type, sdp: offer.sdp },
        });
        return callId;
    },

    async rawAnswer(callId, { video = true } = {}) {
        const invite = rawInvites.get(callId);
        if (!invite) throw new Error(`no invite ${callId} seen; seen: ${[...rawInvites.keys()].join(", ") || "none"}`);
        const rec = newRawRecord(callId, invite.roomId, "inbound");
        const pc = await rawPeer(rec, video && /\r\nm=video /.test(invite.content.offer.sdp));
        await pc.setRemoteDescription(invite.content.offer);
        await pc.setLocalDescription(await pc.createAnswer());
        await waitForGathering(pc);
        const answer = pc.localDescription;
        rec.state = "answered";
        rec.answeredAt = now();
        await client.sendEvent(invite.roomId, "m.call.answer", {
            call_id: callId, version: 0, answer: { type: answer.type, sdp: answer.sdp },
        });
        return callId;
    },

    async rawHangup(callId) {
        const rec = rawCalls.get(callId);
        if (!rec) throw new Error(`no raw call ${callId}`);
        await client.sendEvent(rec.roomId, "m.call.hangup", { call_id: callId, version: 0 });
        rawEnd(rec, "user_hangup", "local");
        return true;
    },

    rawInvites() {
        return [...rawInvites.values()];
    },

    rawState(callId) {
        const rec = rawCalls.get(callId);
        if (!rec) throw new Error(`no raw call ${callId}`);
        const { pc, media, localStream, ...plain } = rec;
        return { ...plain, connectionState: pc?.connectionState ?? null };
    },

    async rawStats(callId) {
        const rec = rawCalls.get(callId);
        if (!rec) throw new Error(`no raw call ${callId}`);
        return mediaStats(rec);
    },
};

// --- the API the test process calls ----------------------------------------------------------------------------

async function recordTimelineEvent(event) {
    if (event.isEncrypted() || event.isBeingDecrypted()) {
        await client.decryptEventIfNeeded(event);
    }
    const type = event.getType();
    if (!type.startsWith("m.call.")) return;
    const entry = {
        t: now(), type, sender: event.getSender(), roomId: event.getRoomId(), eventId: event.getId(),
        encrypted: event.isEncrypted(), content: event.getContent(), age: event.getLocalAge(),
    };
    roomEvents.push(entry);
    await rawOnEvent(entry);
}

export const H = {
    /** Log in with a password (a new device, like a fresh Element session), start syncing, wait until prepared. */
    async start({ baseUrl, userId, password, encryption = false, deviceName = "interop harness",
                  trickleOnly = false, loopback = true }) {
        if (client) throw new Error("already started");
        harnessOptions.trickleOnly = trickleOnly;
        harnessOptions.loopback = loopback;
        const login = await fetch(`${baseUrl}/_matrix/client/v3/login`, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({
                type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password,
                initial_device_display_name: deviceName,
            }),
        });
        const session = await login.json();
        if (!login.ok) throw new Error(`login failed: ${login.status} ${JSON.stringify(session)}`);
        client = sdk.createClient({
            baseUrl, userId: session.user_id, accessToken: session.access_token, deviceId: session.device_id,
            timelineSupport: true,
        });
        if (encryption) {
            await client.initRustCrypto({ useIndexedDB: false });
        }
        RTC.attach(client);
        client.on(CallEventHandlerEvent.Incoming, (call) => {
            note("incoming call", { callId: call.callId, roomId: call.roomId });
            record(call, "inbound");
        });
        client.on(sdk.RoomEvent.Timeline, (event, _room, toStartOfTimeline) => {
            if (!toStartOfTimeline) recordTimelineEvent(event).catch((err) => note("timeline", { error: String(err) }));
        });
        const prepared = new Promise((resolve, reject) => {
            const onSync = (state, _prev, data) => {
                if (state === "PREPARED" || state === "SYNCING") {
                    client.off(sdk.ClientEvent.Sync, onSync);
                    resolve();
                } else if (state === "ERROR") {
                    client.off(sdk.ClientEvent.Sync, onSync);
                    reject(new Error(`sync failed: ${data?.error ?? "unknown"}`));
                }
            };
            client.on(sdk.ClientEvent.Sync, onSync);
        });
        await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false });
        await prepared;
        note("started", { userId: session.user_id, deviceId: session.device_id, encryption });
        return { userId: session.user_id, deviceId: session.device_id, supportsCalls: client.supportsVoip() };
    },

    /** Place a legacy call. ``invitee`` set makes js-sdk's own glare detection possible (Element sets none). */
    async place(roomId, { video = true, invitee = null } = {}) {
        const call = invitee ? sdk.createNewMatrixCall(client, roomId, { invitee }) : client.createCall(roomId);
        if (!call) throw new Error("js-sdk cannot place calls here (no WebRTC support?)");
        const rec = record(call, "outbound");
        rec.placedAt = now();
        if (video) await call.placeVideoCall();
        else await call.placeVoiceCall();
        return call.callId;
    },

    async answer(callId, { video = null } = {}) {
        const rec = need(callId);
        rec.answeredAt = now();
        await rec.call.answer(true, video ?? rec.call.type === "video");
        return describe(rec);
    },

    /** Element's hold button: js-sdk renegotiates (m.call.negotiate) with the media directions set to inactive. */
    hold(callId, onHold) {
        need(callId).call.setRemoteOnHold(onHold);
        return true;
    },

    /** What js-sdk does after ICE stayed disconnected for 2 s: restartIce(), then an m.call.negotiate offer. */
    restartIce(callId) {
        need(callId).call.peerConn.restartIce();
        return true;
    },

    reject(callId) {
        need(callId).call.reject();
        return true;
    },

    hangup(callId, reason = "user_hangup") {
        need(callId).call.hangup(reason, false);
        return true;
    },

    /** Send a raw room event (for version-0 peers and other hand-made signalling). */
    async sendEvent(roomId, type, content) {
        const result = await client.sendEvent(roomId, type, content);
        return result.event_id;
    },

    calls() {
        return [...calls.values()].map(describe);
    },

    call(callId) {
        return describe(need(callId));
    },

    async stats(callId) {
        return mediaStats(need(callId));
    },

    events() {
        return roomEvents;
    },

    /** Every ICE candidate and candidate pair of a call's connection (for checking where media went). */
    async ice(callId) {
        const rec = calls.get(callId) ?? rawCalls.get(callId);
        const pc = rec?.call ? rec.call.peerConn : rec?.pc;
        if (!pc) return null;
        const out = { local: [], remote: [], pairs: [] };
        (await pc.getStats()).forEach((s) => {
            if (s.type === "local-candidate" || s.type === "remote-candidate") {
                (s.type === "local-candidate" ? out.local : out.remote).push(
                    { id: s.id, address: s.address, port: s.port, type: s.candidateType, networkType: s.networkType,
                      priority: s.priority });
            } else if (s.type === "candidate-pair") {
                out.pairs.push({ local: s.localCandidateId, remote: s.remoteCandidateId, state: s.state,
                                 nominated: s.nominated, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived });
            }
        });
        return out;
    },

    notes() {
        return log;
    },

    /** The page clock (ms), for lining it up with the test process's clock. */
    now() {
        return now();
    },

    /** How many RTCPeerConnections the page made (js-sdk's and the raw peer's). */
    connections() {
        return allConnections.length;
    },

    ...RAW,

    ...Object.fromEntries(Object.entries(RTC).filter(([name]) => name.startsWith("rtc"))),

    async stop() {
        await RTC.rtcStop();
        for (const rec of rawCalls.values()) rawEnd(rec, "user_hangup", "local");
        for (const rec of calls.values()) {
            if (rec.call.state !== "ended") rec.call.hangup("user_hangup", true);
            detachMedia(rec);
        }
        client?.stopClient();
        return true;
    },
};

window.H = H;
window.sdk = sdk;
