// MatrixRTC (Element Call's way of calling) in the interop page: matrix-js-sdk's own MatrixRTC code (its
// MatrixRTCSessionManager, the session's membership and delayed-leave handling, ring notifications, per-participant
// media keys over to-device messages) plus livekit-client, put together the way Element Call puts them together.
// harness.js mixes the methods below into window.H (all named rtc*); ../../harness.py wraps them in JsClient.
//
// What Element Call does, and what this does the same way (Element Call's "compatibility" mode, its default):
//   - transport: GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports (js-sdk's
//     _unstable_getRTCTransports); the first {type: "livekit", livekit_service_url} wins. Falls back to the client
//     well-known's org.matrix.msc4143.rtc_foci, as Element Call did before the endpoint existed.
//   - membership: session.joinRTCSession(identity, [], {...transport, livekit_alias: roomId}, joinConfig): js-sdk sends
//     a delayed leave (MSC4140) then the org.matrix.msc3401.call.member state event, focus_active multi_sfu, and keeps
//     the delayed leave alive. joinConfig as Element Call's defaults: delayed leave 10 s, network retry 1 s.
//   - ring: joinConfig.notificationType "ring" and callIntent: js-sdk sends org.matrix.msc4075.rtc.notification once
//     its own membership is in the room and it is the first member.
//   - media: OpenID token, POST {livekit_service_url}/sfu/get {room, openid_token, device_id} -> {url, jwt}, a
//     livekit-client Room with Element Call's options, camera and microphone published (Chromium's fake devices).
//   - E2EE (encrypted rooms only, as Element Call): manageMediaKeys, a BaseKeyProvider fed by the session's
//     EncryptionKeyChanged (key bytes imported as HKDF key material), ratchetWindowSize 10, keyringSize 256, one E2EE
//     worker per LiveKit room, room.setE2EEEnabled(true).
//
// What the tests read: every ring notification and decline seen (decrypted, with js-sdk's own verdict on whether it
// should ring), the session's memberships over time, the raw call.member/notification/decline/slot events and the
// to-device key messages, the keys handed to LiveKit, the LiveKit participants and their tracks (encrypted or not),
// E2EE errors, and per remote participant what the media path delivered: getStats of the video (frames decoded,
// size) and audio (level, energy), a <video>'s requestVideoFrameCallback count and a WebAudio analyser on the
// remote audio, which also plays in an <audio> element (Chromium decodes remote audio only when it is played).

import * as sdk from "matrix-js-sdk";
import {
    MatrixRTCSessionEvent,
    MembershipManagerEvent,
    isLivekitTransportConfig,
    parseCallNotificationContent,
} from "matrix-js-sdk/lib/matrixrtc/index.js";
import {
    AudioPresets,
    BaseKeyProvider,
    DefaultReconnectPolicy,
    Room as LivekitRoom,
    RoomEvent as LivekitRoomEvent,
    Track,
    VideoPresets,
    createKeyMaterialFromBuffer,
    isE2EESupported,
} from "livekit-client";

const MEMBER_EVENT = "org.matrix.msc3401.call.member";
const RTC_MEMBER_EVENT = "org.matrix.msc4143.rtc.member";
const SLOT_EVENT = "org.matrix.msc4143.rtc.slot";
const NOTIFICATION_EVENT = "org.matrix.msc4075.rtc.notification";
const LEGACY_NOTIFY_EVENT = "org.matrix.msc4075.call.notify";
const DECLINE_EVENT = "org.matrix.msc4310.rtc.decline";
const KEYS_EVENT = "io.element.call.encryption_keys";
const RTC_EVENT_TYPES = new Set([MEMBER_EVENT, RTC_MEMBER_EVENT, SLOT_EVENT, NOTIFICATION_EVENT, LEGACY_NOTIFY_EVENT,
                                 DECLINE_EVENT, KEYS_EVENT]);
const WELL_KNOWN_FOCI = "org.matrix.msc4143.rtc_foci";

/** Element Call's MatrixKeyProvider: every media key js-sdk announces goes to LiveKit for that participant. */
class MatrixKeyProvider extends BaseKeyProvider {
    constructor(onKey) {
        super({ ratchetWindowSize: 10, keyringSize: 256 });
        this.session = null;
        this.onKey = onKey;
        this.onEncryptionKeyChanged = (key, index, membership, rtcBackendIdentity) => {
            createKeyMaterialFromBuffer(key).then(
                (material) => {
                    this.onSetEncryptionKey(material, rtcBackendIdentity, index);
                    this.onKey({ key, index, membership, identity: rtcBackendIdentity });
                },
                (err) => this.onKey({ index, membership, identity: rtcBackendIdentity, error: String(err) }),
            );
        };
    }

    setRTCSession(session) {
        this.session?.off(MatrixRTCSessionEvent.EncryptionKeyChanged, this.onEncryptionKeyChanged);
        this.session = session;
        session.on(MatrixRTCSessionEvent.EncryptionKeyChanged, this.onEncryptionKeyChanged);
        session.reemitEncryptionKeys();
    }

    stop() {
        this.session?.off(MatrixRTCSessionEvent.EncryptionKeyChanged, this.onEncryptionKeyChanged);
        this.session = null;
    }
}

/** livekit-client's RoomOptions as Element Call builds them from its default config (720p VP8, simulcast). */
function elementCallRoomOptions(e2ee, { videoHeight = 720 } = {}) {
    const preset = [VideoPresets.h180, VideoPresets.h360, VideoPresets.h540, VideoPresets.h720]
        .find((p) => p.height >= videoHeight) ?? VideoPresets.h720;
    return {
        adaptiveStream: true,
        dynacast: true,
        videoCaptureDefaults: { resolution: preset.resolution },
        publishDefaults: {
            audioPreset: AudioPresets.music,
            dtx: true,
            red: false,
            forceStereo: false,
            simulcast: true,
            videoSimulcastLayers: [VideoPresets.h180, VideoPresets.h360],
            screenShareEncoding: { maxBitrate: 5_000_000, maxFramerate: 30 },
            stopMicTrackOnMute: false,
            videoCodec: "vp8",
            videoEncoding: { maxBitrate: 1_700_000, maxFramerate: 30 },
            backupCodec: { codec: "vp8", encoding: VideoPresets.h720.encoding },
        },
        audioCaptureDefaults: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
        stopLocalTrackOnUnpublish: true,
        reconnectPolicy: new DefaultReconnectPolicy(),
        disconnectOnPageLeave: true,
        webAudioMix: false,
        e2ee,
    };
}

function errorText(err) {
    return String(err?.message ?? err);
}

function base64(bytes) {
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
}

/** The claims of a JWT (no check: LiveKit checks it; the tests read the identity and room it names). */
function jwtClaims(jwt) {
    try {
        const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
        return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    } catch {
        return null;
    }
}

/**
 * The rtc* methods of window.H. ``getClient`` returns harness.js's js-sdk client; ``now`` is the page clock (ms since
 * the page started) and ``note`` adds to the harness log.
 */
export function makeRtc({ getClient, now, note }) {
    const rings = []; // every ring notification (and legacy call.notify) seen in a room, in order
    const declines = []; // every decline seen
    const rtcEvents = []; // raw MatrixRTC room events (state and timeline), decrypted
    const toDevice = []; // io.element.call.encryption_keys to-device messages received
    const memberHistory = []; // snapshots of a room session's memberships, each time they changed
    const watchedSessions = new Set();
    const keys = []; // media keys handed to LiveKit (own and remote)
    let call = null; // the current call (one at a time)
    const pastCalls = [];
    let audioContext = null;
    let attached = false;

    const stamp = () => ({ t: now(), wall: Date.now() });

    // --- observing, from the start of the client on ----------------------------------------------------------------

    function describeMembership(m, oldest) {
        let transport = null;
        try {
            transport = m.getTransport(oldest) ?? null;
        } catch (err) {
            transport = { error: errorText(err) };
        }
        return {
            userId: m.userId, deviceId: m.deviceId, memberId: m.memberId, rtcBackendIdentity: m.rtcBackendIdentity,
            eventId: m.eventId, createdTs: m.createdTs(), callIntent: m.callIntent ?? null,
            application: m.application, slotId: m.slotId, expired: m.isExpired(), transport,
            transports: m.transports,
        };
    }

    function snapshotMembers(roomId, session) {
        const oldest = session.getOldestMembership();
        const members = session.memberships.map((m) => describeMembership(m, oldest));
        memberHistory.push({ ...stamp(), roomId, members });
        if (call && call.roomId === roomId) call.membersChanged(members);
    }

    function watchSession(room) {
        if (watchedSessions.has(room.roomId)) return;
        const session = getClient().matrixRTC.getRoomSession(room);
        watchedSessions.add(room.roomId);
        session.on(MatrixRTCSessionEvent.MembershipsChanged, () => snapshotMembers(room.roomId, session));
        session.initialMembershipCalculated.then(() => {
            if (session.memberships.length) snapshotMembers(room.roomId, session);
        });
    }

    async function ringVerdict(event, room) {
        // What js-sdk 43 itself decides for a receiving client (MSC4075's rules): valid -> the phone should ring.
        try {
            await parseCallNotificationContent(event, { room, userId: getClient().getUserId() });
            return { valid: true, invalidReason: null };
        } catch (err) {
            return { valid: false, invalidReason: errorText(err) };
        }
    }

    async function onTimelineEvent(event, room) {
        const client = getClient();
        if (event.isEncrypted() || event.isBeingDecrypted()) await client.decryptEventIfNeeded(event);
        const type = event.getType();
        if (!RTC_EVENT_TYPES.has(type)) return;
        const entry = {
            ...stamp(), type, eventId: event.getId(), sender: event.getSender(), roomId: event.getRoomId(),
            stateKey: event.getStateKey() ?? null, content: event.getContent(), encrypted: event.isEncrypted(),
            originServerTs: event.getTs(), sticky: event.unstableStickyInfo ?? null,
        };
        rtcEvents.push(entry);
        if (type === NOTIFICATION_EVENT || type === LEGACY_NOTIFY_EVENT) {
            const verdict = type === NOTIFICATION_EVENT && room ? await ringVerdict(event, room)
                : { valid: false, invalidReason: "legacy call.notify: js-sdk 43 does not parse it" };
            const content = entry.content;
            rings.push({
                ...entry,
                own: entry.sender === client.getUserId(),
                notificationType: content.notification_type ?? content.notify_type ?? null,
                mentionsMe: Boolean(content["m.mentions"]?.user_ids?.includes(client.getUserId())),
                mentionsRoom: content["m.mentions"]?.room === true,
                ...verdict,
            });
            note("rtc ring seen", { eventId: entry.eventId, sender: entry.sender, valid: verdict.valid });
        } else if (type === DECLINE_EVENT) {
            declines.push({ ...entry, declines: entry.content["m.relates_to"]?.event_id ?? null });
        }
        if (type === MEMBER_EVENT && room) watchSession(room);
    }

    /** Called by harness.js once its client exists, before it syncs: nothing that arrives is missed. */
    function attach(client) {
        if (attached) return;
        attached = true;
        client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
            if (toStartOfTimeline) return;
            onTimelineEvent(event, room).catch((err) => note("rtc timeline", { error: errorText(err) }));
        });
        client.on(sdk.ClientEvent.ToDeviceEvent, (event) => {
            if (event.getType() !== KEYS_EVENT) return;
            toDevice.push({ ...stamp(), type: KEYS_EVENT, sender: event.getSender(), content: event.getContent(),
                            wireType: event.getWireType?.() ?? null, encrypted: event.isEncrypted() });
        });
        client.on(sdk.RoomStateEvent.Events, (event) => {
            if (event.getType() !== MEMBER_EVENT) return;
            const room = client.getRoom(event.getRoomId());
            if (room) watchSession(room);
        });
    }

    // --- transport discovery and the SFU token ---------------------------------------------------------------------

    async function discoverTransport(discovery) {
        const client = getClient();
        const tried = [];
        if (discovery !== "well-known") {
            try {
                const transports = await client._unstable_getRTCTransports();
                const found = transports.find(isLivekitTransportConfig);
                if (found) return { transport: found, source: "rtc/transports", tried };
                tried.push({ source: "rtc/transports", result: transports });
            } catch (err) {
                tried.push({ source: "rtc/transports", error: errorText(err) });
            }
        }
        if (discovery !== "transports") {
            try {
                let wellKnown = client.getClientWellKnown();
                if (!wellKnown) {
                    const reply = await fetch(`${client.getHomeserverUrl()}/.well-known/matrix/client`);
                    wellKnown = reply.ok ? await reply.json() : null;
                    if (!reply.ok) tried.push({ source: "well-known", status: reply.status });
                }
                const found = (wellKnown?.[WELL_KNOWN_FOCI] ?? []).find(isLivekitTransportConfig);
                if (found) return { transport: found, source: "well-known", tried };
                tried.push({ source: "well-known", result: wellKnown });
            } catch (err) {
                tried.push({ source: "well-known", error: errorText(err) });
            }
        }
        throw new Error(`no LiveKit focus found: ${JSON.stringify(tried)}`);
    }

    async function sfuConfig(serviceUrl, roomId) {
        const client = getClient();
        const openidToken = await client.getOpenIdToken();
        const reply = await fetch(`${serviceUrl.replace(/\/$/, "")}/sfu/get`, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ room: roomId, openid_token: openidToken, device_id: client.getDeviceId() }),
        });
        const text = await reply.text();
        if (!reply.ok) throw new Error(`/sfu/get answered ${reply.status}: ${text.slice(0, 500)}`);
        const body = JSON.parse(text);
        return { url: body.url, jwt: body.jwt, claims: jwtClaims(body.jwt) };
    }

    // --- media: play and analyse what a remote participant sends ---------------------------------------------------

    function mediaFor(identity) {
        let media = call.media.get(identity);
        if (!media) {
            media = { identity, video: null, audio: null, videoTrack: null, audioTrack: null, videoFrames: 0,
                      lastFrameSize: null, firstFrame: null, peakRms: 0, rmsSamples: 0, loudSamples: 0,
                      firstLoud: null, timer: null, source: null, closed: false };
            call.media.set(identity, media);
        }
        return media;
    }

    function attachVideo(track, identity) {
        const media = mediaFor(identity);
        if (media.video) track.detach(media.video);
        const video = media.video ?? document.createElement("video");
        video.muted = true;
        video.playsInline = true;
        video.autoplay = true;
        // livekit-client's adaptiveStream only subscribes to video an element shows: give it a visible size
        video.style.cssText = "width:320px;height:240px;display:block";
        if (!media.video) document.body.appendChild(video);
        media.video = video;
        media.videoTrack = track;
        track.attach(video);
        if ("requestVideoFrameCallback" in video && !media.frameCallback) {
            const onFrame = (_t, metadata) => {
                media.videoFrames += 1;
                media.lastFrameSize = [metadata.width, metadata.height];
                if (media.firstFrame === null) {
                    media.firstFrame = stamp();
                    note("rtc first remote frame", { identity, ...media.firstFrame });
                }
                if (!media.closed) video.requestVideoFrameCallback(onFrame);
            };
            media.frameCallback = onFrame;
            video.requestVideoFrameCallback(onFrame);
        }
    }

    function attachAudio(track, identity) {
        const media = mediaFor(identity);
        const audio = media.audio ?? document.createElement("audio");
        audio.autoplay = true;
        if (!media.audio) document.body.appendChild(audio);
        media.audio = audio;
        media.audioTrack = track;
        track.attach(audio);
        audio.play().catch((err) => note("rtc audio play failed", { error: errorText(err) }));
        audioContext ??= new AudioContext();
        audioContext.resume().catch(() => {});
        media.source?.disconnect();
        clearInterval(media.timer);
        const source = audioContext.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
        const analyser = audioContext.createAnalyser();
        analyser.fftSize = 2048;
        source.connect(analyser);
        media.source = source;
        const buffer = new Float32Array(analyser.fftSize);
        media.timer = setInterval(() => {
            analyser.getFloatTimeDomainData(buffer);
            let sum = 0;
            for (const v of buffer) sum += v * v;
            const rms = Math.sqrt(sum / buffer.length);
            media.rmsSamples += 1;
            if (rms > 0.01) {
                media.loudSamples += 1;
                if (media.firstLoud === null) media.firstLoud = stamp();
            }
            media.peakRms = Math.max(media.peakRms, rms);
        }, 50);
    }

    function closeMedia(media) {
        if (media.closed) return;
        media.closed = true;
        clearInterval(media.timer);
        media.source?.disconnect();
        for (const [track, el] of [[media.videoTrack, media.video], [media.audioTrack, media.audio]]) {
            if (!el) continue;
            try {
                track?.detach(el);
            } catch {
                // the track may be gone already
            }
            el.srcObject = null;
            el.remove();
        }
    }

    async function inboundStats(track) {
        if (!track) return null;
        let report;
        try {
            report = await track.getRTCStatsReport();
        } catch (err) {
            return { error: errorText(err) };
        }
        if (!report) return null;
        const byId = new Map();
        report.forEach((s) => byId.set(s.id, s));
        let out = null;
        report.forEach((s) => {
            if (s.type !== "inbound-rtp") return;
            const codec = byId.get(s.codecId)?.mimeType ?? null;
            out = s.kind === "video" ? {
                framesDecoded: s.framesDecoded ?? 0, framesReceived: s.framesReceived ?? 0,
                frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, packets: s.packetsReceived ?? 0,
                bytes: s.bytesReceived ?? 0, codec, decoder: s.decoderImplementation ?? null,
                keyFramesDecoded: s.keyFramesDecoded ?? 0, pliCount: s.pliCount ?? 0, nackCount: s.nackCount ?? 0,
                freezeCount: s.freezeCount ?? 0, packetsLost: s.packetsLost ?? 0,
            } : {
                packets: s.packetsReceived ?? 0, bytes: s.bytesReceived ?? 0, audioLevel: s.audioLevel ?? 0,
                totalAudioEnergy: s.totalAudioEnergy ?? 0, totalSamplesDuration: s.totalSamplesDuration ?? 0,
                concealedSamples: s.concealedSamples ?? 0, totalSamplesReceived: s.totalSamplesReceived ?? 0,
                codec,
            };
        });
        return out;
    }

    async function outboundStats(track) {
        if (!track) return null;
        let report;
        try {
            report = await track.getRTCStatsReport();
        } catch (err) {
            return { error: errorText(err) };
        }
        if (!report) return null;
        const out = { packets: 0, bytes: 0, frames: 0, layers: 0 };
        report.forEach((s) => {
            if (s.type !== "outbound-rtp") return;
            out.layers += 1;
            out.packets += s.packetsSent ?? 0;
            out.bytes += s.bytesSent ?? 0;
            out.frames += s.framesEncoded ?? 0;
        });
        return out;
    }

    // --- one call ----------------------------------------------------------------------------------------------------

    function newCall(roomId, options) {
        const record = {
            roomId, options, state: "joining", times: { joinStart: stamp() }, transport: null, transportSource: null,
            sfu: null, livekitState: null, livekitStates: [], participants: new Map(), media: new Map(),
            encryptionErrors: [], errors: [], notificationSent: null, membershipStatus: [], session: null,
            room: null, keyProvider: null, encrypted: false, localIdentity: null, left: null,
            membersChanged(members) {
                const mine = members.some((m) => m.userId === getClient().getUserId()
                                          && m.deviceId === getClient().getDeviceId());
                if (mine && !record.times.ownMembership) record.times.ownMembership = stamp();
            },
        };
        return record;
    }

    function participantRecord(participant) {
        let p = call.participants.get(participant.identity);
        if (!p) {
            p = { identity: participant.identity, sid: participant.sid, connected: stamp(), disconnected: null,
                  tracks: new Map() };
            call.participants.set(participant.identity, p);
        }
        return p;
    }

    function wireLivekit(room) {
        room.on(LivekitRoomEvent.ConnectionStateChanged, (state) => {
            call.livekitState = state;
            call.livekitStates.push({ state, ...stamp() });
        });
        room.on(LivekitRoomEvent.ParticipantConnected, (participant) => participantRecord(participant));
        room.on(LivekitRoomEvent.ParticipantDisconnected, (participant) => {
            participantRecord(participant).disconnected = stamp();
        });
        room.on(LivekitRoomEvent.TrackPublished, (publication, participant) => {
            participantRecord(participant).tracks.set(publication.trackSid, { publication, subscribed: null });
        });
        room.on(LivekitRoomEvent.TrackSubscribed, (track, publication, participant) => {
            const p = participantRecord(participant);
            p.tracks.set(publication.trackSid, { publication, subscribed: stamp() });
            if (track.kind === Track.Kind.Video) attachVideo(track, participant.identity);
            else if (track.kind === Track.Kind.Audio) attachAudio(track, participant.identity);
            note("rtc track subscribed", { identity: participant.identity, kind: track.kind,
                                           encrypted: publication.isEncrypted });
        });
        room.on(LivekitRoomEvent.TrackUnsubscribed, (track, publication, participant) => {
            const entry = call.participants.get(participant.identity)?.tracks.get(publication.trackSid);
            if (entry) entry.unsubscribed = stamp();
        });
        room.on(LivekitRoomEvent.TrackSubscriptionFailed, (trackSid, participant, reason) => {
            call.errors.push({ ...stamp(), what: "subscription failed", trackSid, identity: participant?.identity,
                               reason: String(reason) });
        });
        room.on(LivekitRoomEvent.EncryptionError, (error, participant) => {
            call.encryptionErrors.push({ ...stamp(), message: errorText(error), reason: error?.reason ?? null,
                                         identity: participant?.identity ?? null });
        });
        room.on(LivekitRoomEvent.ParticipantEncryptionStatusChanged, (enabled, participant) => {
            note("rtc encryption status", { identity: participant?.identity ?? null, enabled });
        });
        room.on(LivekitRoomEvent.MediaDevicesError, (error) => {
            call.errors.push({ ...stamp(), what: "media devices", message: errorText(error) });
        });
    }

    function wireSession(session) {
        const onError = (error) => call?.errors.push({ ...stamp(), what: "membership manager",
                                                       message: errorText(error) });
        const onStatus = (_old, status) => call?.membershipStatus.push({ status, ...stamp() });
        const onNotification = (content) => {
            if (!call) return;
            call.notificationSent = { ...stamp(), eventId: content.event_id, content };
        };
        session.on(MatrixRTCSessionEvent.MembershipManagerError, onError);
        session.on(MembershipManagerEvent.StatusChanged, onStatus);
        session.on(MatrixRTCSessionEvent.DidSendCallNotification, onNotification);
        return () => {
            session.off(MatrixRTCSessionEvent.MembershipManagerError, onError);
            session.off(MembershipManagerEvent.StatusChanged, onStatus);
            session.off(MatrixRTCSessionEvent.DidSendCallNotification, onNotification);
        };
    }

    async function connectAndPublish(record, roomId) {
        record.sfu = await sfuConfig(record.transport.livekit_service_url, roomId);
        record.times.sfuToken = stamp();
        const room = record.room;
        await room.connect(record.sfu.url, record.sfu.jwt);
        record.localIdentity = room.localParticipant.identity;
        record.times.livekitConnected = stamp();
        for (const participant of room.remoteParticipants.values()) {
            participantRecord(participant);
            for (const publication of participant.trackPublications.values()) {
                participantRecord(participant).tracks.set(publication.trackSid, { publication, subscribed: null });
            }
        }
        if (record.encrypted) await room.setE2EEEnabled(true);
        await room.localParticipant.enableCameraAndMicrophone();
        record.times.published = stamp();
    }

    async function describeCall(record, withStats) {
        const room = record.room;
        const participants = [];
        for (const p of record.participants.values()) {
            const live = room?.remoteParticipants.get(p.identity);
            const tracks = [];
            const publications = live ? [...live.trackPublications.values()] : [];
            for (const publication of publications) {
                const seen = p.tracks.get(publication.trackSid);
                tracks.push({
                    sid: publication.trackSid, kind: publication.kind, source: publication.source,
                    encrypted: publication.isEncrypted, subscribed: publication.isSubscribed,
                    subscribedAt: seen?.subscribed ?? null, mimeType: publication.mimeType ?? null,
                    dimensions: publication.dimensions ?? null,
                });
            }
            const media = record.media.get(p.identity);
            const entry = {
                identity: p.identity, sid: p.sid, connected: p.connected, disconnected: p.disconnected,
                present: Boolean(live), encrypted: live ? live.isEncrypted : null, tracks,
                element: media ? {
                    videoFrames: media.videoFrames, lastFrameSize: media.lastFrameSize, firstFrame: media.firstFrame,
                    videoSize: media.video ? [media.video.videoWidth, media.video.videoHeight] : null,
                    peakRms: media.peakRms, loudSamples: media.loudSamples, rmsSamples: media.rmsSamples,
                    firstLoud: media.firstLoud,
                } : null,
            };
            if (withStats && media && !media.closed) {
                entry.video = await inboundStats(media.videoTrack);
                entry.audio = await inboundStats(media.audioTrack);
            }
            participants.push(entry);
        }
        const local = room?.localParticipant;
        const out = {
            roomId: record.roomId, state: record.state, options: record.options, times: record.times,
            transport: record.transport, transportSource: record.transportSource,
            sfu: record.sfu ? { url: record.sfu.url, claims: record.sfu.claims } : null,
            livekitState: record.livekitState, livekitStates: record.livekitStates,
            livekitRoom: room ? room.name : null, localIdentity: record.localIdentity,
            e2ee: { wanted: record.encrypted, enabled: room ? room.isE2EEEnabled : null,
                    localEncrypted: local ? local.isEncrypted : null },
            localTracks: local ? [...local.trackPublications.values()].map((pub) => ({
                sid: pub.trackSid, kind: pub.kind, source: pub.source, encrypted: pub.isEncrypted,
                muted: pub.isMuted,
            })) : [],
            participants, encryptionErrors: record.encryptionErrors, errors: record.errors,
            notificationSent: record.notificationSent, membershipStatus: record.membershipStatus,
            sessionStatus: record.session?.membershipStatus ?? null, joined: record.session?.isJoined() ?? false,
            left: record.left,
        };
        if (withStats && local) {
            out.outbound = {};
            for (const pub of local.trackPublications.values()) {
                if (pub.track) out.outbound[pub.kind] = await outboundStats(pub.track);
            }
        }
        return out;
    }

    async function leaveCall(record, timeout = 5000) {
        if (record.state === "left") return record.left;
        record.state = "leaving";
        record.times.leaveStart = stamp();
        let sent = null;
        try {
            sent = await record.session?.leaveRoomSession(timeout);
        } catch (err) {
            record.errors.push({ ...stamp(), what: "leave", message: errorText(err) });
        }
        record.unwire?.();
        record.keyProvider?.stop();
        for (const media of record.media.values()) closeMedia(media);
        try {
            await record.room?.disconnect(true);
        } catch (err) {
            record.errors.push({ ...stamp(), what: "disconnect", message: errorText(err) });
        }
        record.state = "left";
        record.left = { ...stamp(), membershipLeaveSent: sent };
        record.times.left = record.left;
        return record.left;
    }

    // --- the API -----------------------------------------------------------------------------------------------------

    return {
        attach,

        /**
         * Join the room's MatrixRTC call as Element Call does, and connect to LiveKit and publish camera and
         * microphone. ``ring``: a user id (or true) sends js-sdk's ring notification once the membership is in;
         * ``intent``: the call intent ("video"/"audio"); ``discovery``: "auto", "transports" or "well-known";
         * ``focusSelection``: "multi_sfu" (Element Call's default mode) or "oldest_membership" (its legacy mode);
         * ``encrypt``: media E2EE (default: whether the room is encrypted, as Element Call); ``openSlot``: first
         * open the room's org.matrix.msc4143.rtc.slot (as Element Web does with its slots labs flag). Returns when
         * the membership is sent and LiveKit is connected and publishing.
         */
        async rtcJoin(roomId, { ring = null, intent = "video", discovery = "auto", focusSelection = "multi_sfu",
                                encrypt = null, openSlot = false, videoHeight = 720 } = {}) {
            const client = getClient();
            if (call && call.state !== "left") throw new Error(`already in a call in ${call.roomId}`);
            const room = client.getRoom(roomId);
            if (!room) throw new Error(`not in room ${roomId}`);
            const record = newCall(roomId, { ring, intent, discovery, focusSelection, encrypt, openSlot, videoHeight });
            if (call) pastCalls.push(call);
            call = record;
            try {
                const found = await discoverTransport(discovery);
                record.transport = found.transport;
                record.transportSource = found.source;
                record.times.transport = stamp();
                record.encrypted = encrypt ?? room.hasEncryptionStateEvent();
                if (record.encrypted && !isE2EESupported()) throw new Error("livekit-client says E2EE is unsupported");

                const session = client.matrixRTC.getRoomSession(room);
                record.session = session;
                watchSession(room);
                record.unwire = wireSession(session);
                let e2ee;
                if (record.encrypted) {
                    record.keyProvider = new MatrixKeyProvider((k) => {
                        keys.push({ ...stamp(), roomId, identity: k.identity, index: k.index,
                                    userId: k.membership?.userId ?? null, deviceId: k.membership?.deviceId ?? null,
                                    memberId: k.membership?.memberId ?? null,
                                    own: k.membership?.userId === client.getUserId()
                                         && k.membership?.deviceId === client.getDeviceId(),
                                    key: k.key ? base64(k.key) : null, keyLength: k.key?.length ?? null,
                                    error: k.error ?? null });
                    });
                    record.keyProvider.setRTCSession(session);
                    // one worker per LiveKit room, as Element Call (workers get confused by several rooms' streams)
                    e2ee = { keyProvider: record.keyProvider,
                             worker: new Worker(new URL("./livekit-e2ee-worker.js", import.meta.url)) };
                }
                record.room = new LivekitRoom(elementCallRoomOptions(e2ee, { videoHeight }));
                wireLivekit(record.room);

                if (openSlot) {
                    await session.ensureRtcSlotOpen(record.encrypted
                        ? { encryption: { type: "org.matrix.msc4143.per_member" } } : {});
                    record.times.slotOpened = stamp();
                }
                const transport = { ...record.transport, livekit_alias: roomId };
                const joinConfig = {
                    notificationType: ring ? "ring" : undefined,
                    callIntent: intent,
                    manageMediaKeys: record.encrypted,
                    delayedLeaveEventDelayMs: 10000,
                    networkErrorRetryMs: 1000,
                    maximumNetworkErrorRetryCount: 11,
                    unstableSendStickyEvents: false,
                };
                const identity = { userId: client.getUserId(), deviceId: client.getDeviceId(),
                                   memberId: `${client.getUserId()}:${client.getDeviceId()}` };
                record.times.sessionJoin = stamp();
                if (focusSelection === "multi_sfu") session.joinRTCSession(identity, [], transport, joinConfig);
                else session.joinRTCSession(identity, [transport], undefined, joinConfig);
                await connectAndPublish(record, roomId);
                record.state = "joined";
                return await describeCall(record, false);
            } catch (err) {
                record.errors.push({ ...stamp(), what: "join", message: errorText(err) });
                await leaveCall(record, 2000).catch(() => {});
                record.state = "failed";
                throw err;
            }
        },

        /** Leave the MatrixRTC session (js-sdk sends the delayed leave now, or an empty member event) and LiveKit. */
        async rtcLeave({ timeout = 5000 } = {}) {
            if (!call) throw new Error("no call to leave");
            return await leaveCall(call, timeout);
        },

        /** Decline a ring as js-sdk does (client.sendRtcDecline: org.matrix.msc4310.rtc.decline). */
        async rtcDecline(roomId, notificationEventId) {
            const result = await getClient().sendRtcDecline(roomId, notificationEventId);
            note("rtc declined", { roomId, notificationEventId, eventId: result.event_id });
            return result.event_id;
        },

        /** Send a ring notification by hand (for shapes js-sdk does not send itself). */
        async rtcSendNotification(roomId, content) {
            const result = await getClient().sendEvent(roomId, NOTIFICATION_EVENT, content);
            return result.event_id;
        },

        rtcRings() {
            return rings;
        },

        rtcDeclines() {
            return declines;
        },

        /** Raw MatrixRTC events seen in rooms (member state, slot, notification, decline), decrypted. */
        rtcEvents() {
            return rtcEvents;
        },

        /** io.element.call.encryption_keys to-device messages received (decrypted content). */
        rtcToDevice() {
            return toDevice;
        },

        /** Media keys handed to LiveKit's key provider: identity, index, key (base64), whose. */
        rtcKeys() {
            return keys;
        },

        /** The room's current memberships as js-sdk computes them, and their history (snapshots on change). */
        async rtcMembers(roomId) {
            const client = getClient();
            const room = client.getRoom(roomId);
            if (!room) throw new Error(`not in room ${roomId}`);
            const session = client.matrixRTC.getRoomSession(room);
            watchSession(room);
            await session.ensureRecalculateSessionMembers();
            const oldest = session.getOldestMembership();
            const stateEvents = room.getLiveTimeline().getState(sdk.EventTimeline.FORWARDS)
                ?.getStateEvents(MEMBER_EVENT) ?? [];
            return {
                ...stamp(),
                members: session.memberships.map((m) => describeMembership(m, oldest)),
                history: memberHistory.filter((h) => h.roomId === roomId),
                stateEvents: stateEvents.map((e) => ({ stateKey: e.getStateKey(), sender: e.getSender(),
                                                      eventId: e.getId(), content: e.getContent(), ts: e.getTs() })),
                slot: session.getRtcSlot() ?? null,
            };
        },

        /** The current (or last) call: transport, token claims, LiveKit state, participants, tracks, times. */
        async rtcCall() {
            if (!call) return null;
            return await describeCall(call, false);
        },

        /** rtcCall plus getStats of every remote participant's video and audio and of what this page sends. */
        async rtcStats() {
            if (!call) return null;
            return await describeCall(call, true);
        },

        async rtcStop() {
            if (call && call.state !== "left") await leaveCall(call, 2000).catch(() => {});
            return true;
        },
    };
}
