// vcs-edge console: live view (WebRTC, HLS fallback), server-sent events, language switch. No build step.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  // language switch: ?lang=xx sets the cookie on the server
  const lang = document.getElementById("lang");
  if (lang) {
    lang.addEventListener("click", (ev) => {
      ev.preventDefault();
      const u = new URL(location.href);
      u.searchParams.set("lang", lang.dataset.lang);
      location.href = u.toString();
    });
  }

  // --- live view ----------------------------------------------------------------------------------------
  const video = document.getElementById("live");
  const state = document.getElementById("live-state");
  const say = (text) => { if (state) state.textContent = text; };

  async function webrtc(cam) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);
    });
    const resp = await fetch("/console/webrtc/" + encodeURIComponent(cam), {
      method: "POST", headers: { "Content-Type": "application/sdp", "X-CSRF-Token": csrf },
      body: pc.localDescription.sdp, credentials: "same-origin",
    });
    if (resp.status !== 201) throw new Error("offer refused: " + resp.status + " " + (await resp.text()));
    const where = resp.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    window.livePc = pc;
    // WHEP's DELETE when the page goes away, so the box stops sending at once
    window.addEventListener("pagehide", () => {
      if (where) fetch(where, { method: "DELETE", keepalive: true, headers: { "X-CSRF-Token": csrf } });
      pc.close();
    });
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no video within 8 s")), 8000);
      video.addEventListener("playing", () => { clearTimeout(t); resolve(); }, { once: true });
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") { clearTimeout(t); reject(new Error("ICE failed")); }
      });
    });
  }

  async function hls(cam) {
    let url = null;
    for (let i = 0; i < 60 && !url; i++) {
      const r = await fetch("/console/api/live/" + encodeURIComponent(cam), { credentials: "same-origin" });
      const j = await r.json();
      if (j.code === "200") url = j.url;
      else if (j.code !== "Retry") throw new Error(j.message || j.code);
      else await new Promise((res) => setTimeout(res, 1000));
    }
    if (!url) throw new Error("HLS did not start");
    if (window.Hls && window.Hls.isSupported()) {
      const h = new window.Hls({ liveSyncDurationCount: 2 });
      h.loadSource(url);
      h.attachMedia(video);
    } else {
      video.src = url;
    }
    await video.play().catch(() => {});
  }

  function loadHlsJs() {
    return new Promise((resolve) => {
      if (window.Hls) return resolve();
      const s = document.createElement("script");
      s.src = "/console/static/hls.light-1.5.20.min.js";
      s.onload = resolve;
      s.onerror = resolve;
      document.head.appendChild(s);
    });
  }

  async function startLive() {
    const cam = video.dataset.camera;
    const forceHls = new URL(location.href).searchParams.get("live") === "hls";
    if (!forceHls) {
      try {
        await webrtc(cam);
        video.dataset.mode = "webrtc";
        say("WebRTC · " + video.videoWidth + "×" + video.videoHeight);
        return;
      } catch (err) {
        say(String(err));
        if (window.livePc) window.livePc.close();
        video.srcObject = null;
      }
    }
    await loadHlsJs();
    try {
      await hls(cam);
      video.dataset.mode = "hls";
      say("HLS");
    } catch (err) {
      video.dataset.mode = "failed";
      say(String(err));
    }
  }
  if (video) startLive();

  // --- thumbnails -----------------------------------------------------------------------------------------
  const thumbs = document.querySelectorAll("img[data-thumb]");
  if (thumbs.length) {
    setInterval(() => thumbs.forEach((img) => {
      const base = img.src.split("?")[0];
      img.src = base + "?t=" + Date.now();
    }), 10000);
  }

  // --- server-sent events -----------------------------------------------------------------------------
  const gallery = document.getElementById("gallery");
  const events = new EventSource("/console/events");
  window.consoleEvents = events;
  events.addEventListener("status", (ev) => {
    const d = JSON.parse(ev.data);
    document.querySelectorAll('[data-camera="' + CSS.escape(d.camera) + '"] [data-status]').forEach((b) => {
      b.textContent = d.status;
      b.className = "badge " + d.status;
    });
    if (d.camera && video && video.dataset.camera === d.camera) {
      document.querySelectorAll("h2 [data-status]").forEach((b) => { b.textContent = d.status; b.className = "badge " + d.status; });
    }
  });
  events.addEventListener("targets", (ev) => {
    if (!gallery || gallery.dataset.live === "0") return;
    const want = gallery.dataset;
    for (const r of JSON.parse(ev.data)) {
      if (want.type && want.type !== r.type) continue;
      if (want.camera && want.camera !== r.camera) continue;
      const a = document.createElement("a");
      a.className = "target new";
      a.href = "/console/targets/" + encodeURIComponent(r.id);
      a.dataset.target = r.id;
      a.innerHTML = '<img alt="" src="' + esc(r.crop) + '"><div><b>' + esc(r.type) + '</b> <span class="muted">' +
        esc(r.time) + "</span><br>" + esc(r.camera) + '<br><span class="muted">' + esc(r.attrs) + "</span></div>";
      gallery.prepend(a);
      const total = document.getElementById("total");
      if (total) total.textContent = String(Number(total.textContent) + 1);
    }
  });
})();

// search by picture: drop a file on the form
(function () {
  const drop = document.getElementById("drop");
  const input = document.getElementById("picture");
  if (!drop || !input) return;
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer && ev.dataTransfer.files.length) {
      input.files = ev.dataTransfer.files;
      drop.submit();
    }
  });
})();
