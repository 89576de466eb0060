// One match's WebRTC connection: a fresh RTCPeerConnection per match, closed when the match ends.
//
// The "offer" side (matched.role) makes every offer, including ICE restarts; the "answer" side only answers,
// so the two never offer at once. Descriptions travel in `signal` as {type, sdp} and candidates as
// RTCIceCandidate.toJSON() ({candidate, sdpMid, sdpMLineIndex, usernameFragment}), as docs/protocol.md shows.

const KINDS = ["audio", "video"];
const MAX_FAILED_RESTARTS = 3; // ICE restarts the offer side tries by itself after a failure

/** welcome.ice_servers and welcome.ice_transport_policy as an RTCConfiguration. */
export function rtcConfiguration(welcome) {
  const iceServers = [];
  for (const server of Array.isArray(welcome?.ice_servers) ? welcome.ice_servers : []) {
    if (server === null || typeof server !== "object") continue;
    const urls = (Array.isArray(server.urls) ? server.urls : [server.urls]).filter((url) => typeof url === "string");
    if (urls.length === 0) continue;
    const entry = { urls };
    if (typeof server.username === "string") entry.username = server.username;
    if (typeof server.credential === "string") entry.credential = server.credential;
    iceServers.push(entry);
  }
  const policy = welcome?.ice_transport_policy === "relay" ? "relay" : "all";
  return { iceServers, iceTransportPolicy: policy };
}

function peerConnection(configuration) {
  try {
    return new RTCPeerConnection(configuration);
  } catch (error) {
    // A URL the browser does not accept throws here: keep the servers it does accept.
    console.warn("vchat: an ICE server was refused; trying them one by one", error);
    const accepted = configuration.iceServers.filter((server) => {
      try {
        new RTCPeerConnection({ iceServers: [server] }).close();
        return true;
      } catch {
        return false;
      }
    });
    return new RTCPeerConnection({ ...configuration, iceServers: accepted });
  }
}

export class Call {
  /**
   * `match`: the `matched` message (match_id, role, partner); `configuration`: from rtcConfiguration();
   * `localStream`: the camera's MediaStream or null; `sendSignal(payload)`: hands a payload to the partner;
   * `onChange()`: called when the connection's state changes or the partner's tracks arrive (in
   * `remoteStream`).
   */
  constructor({ match, configuration, localStream, sendSignal, onChange }) {
    this.matchId = match.match_id;
    this.role = match.role === "offer" ? "offer" : "answer";
    this.partner = match.partner && typeof match.partner === "object" ? match.partner : {};
    this.sendSignal = sendSignal;
    this.onChange = onChange;
    this.closed = false;
    this.remoteStream = null; // the partner's tracks, once the first one arrives
    this.pendingCandidates = []; // the partner's, until their description is set
    this.outgoingCandidates = []; // ours, until our description has been sent
    this.descriptionSent = false;
    this.failedRestarts = 0;
    this.queue = Promise.resolve(); // the partner's signals, applied one at a time and in order

    const pc = peerConnection(configuration);
    this.pc = pc;
    pc.onicecandidate = ({ candidate }) => {
      if (candidate === null || this.closed) return; // end of candidates: nothing to tell
      const payload = candidate.toJSON();
      if (this.descriptionSent) this.sendSignal(payload);
      else this.outgoingCandidates.push(payload);
    };
    pc.ontrack = ({ track, streams }) => {
      this.remoteStream ??= streams[0] ?? new MediaStream();
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      this.onChange();
    };
    pc.onnegotiationneeded = () => {
      if (this.role === "offer") this.offer();
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && this.role === "offer" && this.failedRestarts < MAX_FAILED_RESTARTS) {
        this.failedRestarts += 1;
        this.restartIce();
      }
      if (pc.connectionState === "connected") this.failedRestarts = 0;
      this.onChange();
    };
    pc.oniceconnectionstatechange = () => this.onChange();

    for (const kind of KINDS) {
      const track = localStream?.getTracks().find((candidate) => candidate.kind === kind);
      if (track) pc.addTrack(track, localStream);
      // Without a camera (or microphone) the offer still asks for the partner's.
      else if (this.role === "offer") pc.addTransceiver(kind, { direction: "recvonly" });
    }
  }

  /** Whether the media path is up: connectionState "connected" (ICE connected and DTLS done). */
  get connected() {
    if (this.closed) return false;
    const state = this.pc.connectionState;
    if (state !== undefined) return state === "connected";
    return ["connected", "completed"].includes(this.pc.iceConnectionState); // a browser without connectionState
  }

  /** Apply one `signal` payload from the partner. */
  handleSignal(payload) {
    if (this.closed || payload === null || typeof payload !== "object") return;
    this.queue = this.queue
      .then(() => this.apply(payload))
      .catch((error) => console.warn("vchat: a signal from the partner failed", error));
  }

  async apply(payload) {
    if (this.closed) return;
    const pc = this.pc;
    if (payload.type === "offer" && typeof payload.sdp === "string") {
      if (this.role !== "answer") return; // only the offer side offers
      await pc.setRemoteDescription({ type: "offer", sdp: payload.sdp });
      await this.flushPendingCandidates();
      this.descriptionSent = false; // candidates of the answer wait until it has gone
      await pc.setLocalDescription();
      this.sendDescription();
    } else if (payload.type === "answer" && typeof payload.sdp === "string") {
      if (this.role !== "offer" || pc.signalingState !== "have-local-offer") return;
      await pc.setRemoteDescription({ type: "answer", sdp: payload.sdp });
      await this.flushPendingCandidates();
    } else if (typeof payload.candidate === "string") {
      const candidate = {
        candidate: payload.candidate,
        sdpMid: typeof payload.sdpMid === "string" ? payload.sdpMid : null,
        sdpMLineIndex: Number.isInteger(payload.sdpMLineIndex) ? payload.sdpMLineIndex : null,
      };
      if (typeof payload.usernameFragment === "string") candidate.usernameFragment = payload.usernameFragment;
      if (pc.remoteDescription === null) this.pendingCandidates.push(candidate);
      else await this.addCandidate(candidate);
    }
  }

  async flushPendingCandidates() {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of pending) await this.addCandidate(candidate);
  }

  async addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (error) {
      // A candidate of an earlier ICE generation, after a restart, is refused: nothing is lost.
      if (!this.closed) console.debug("vchat: a remote ICE candidate was refused", error);
    }
  }

  async offer() {
    if (this.closed) return;
    try {
      this.descriptionSent = false; // candidates of this offer (an ICE restart's too) wait until it has gone
      await this.pc.setLocalDescription();
      this.sendDescription();
    } catch (error) {
      if (!this.closed) console.warn("vchat: making an offer failed", error);
    }
  }

  sendDescription() {
    if (this.closed) return;
    const { type, sdp } = this.pc.localDescription;
    this.sendSignal({ type, sdp });
    this.descriptionSent = true;
    const waiting = this.outgoingCandidates;
    this.outgoingCandidates = [];
    for (const payload of waiting) this.sendSignal(payload);
  }

  /** Restart ICE, after either side's network changed (partner_resumed, or this page's own resume). */
  restartIce() {
    if (this.closed || this.role !== "offer") return;
    if (typeof this.pc.restartIce === "function") {
      this.pc.restartIce(); // fires negotiationneeded, and offer() sends the new offer
      return;
    }
    this.descriptionSent = false;
    this.pc
      .createOffer({ iceRestart: true })
      .then((offer) => this.pc.setLocalDescription(offer))
      .then(() => this.sendDescription())
      .catch((error) => console.warn("vchat: ICE restart failed", error));
  }

  /** End the connection cleanly: stop the partner's tracks, close the RTCPeerConnection. */
  close() {
    if (this.closed) return;
    this.closed = true;
    const pc = this.pc;
    pc.onicecandidate = pc.ontrack = pc.onnegotiationneeded = null;
    pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    for (const receiver of pc.getReceivers()) receiver.track?.stop();
    for (const track of this.remoteStream?.getTracks() ?? []) track.stop();
    pc.close();
    this.pendingCandidates = [];
    this.outgoingCandidates = [];
  }
}
