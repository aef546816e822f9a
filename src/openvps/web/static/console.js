// The console: xterm.js attached to /1.0/instances/{ctid}/exec over a WebSocket (the session cookie
// authenticates it). Protocol (api/exec_ws.py): first a JSON request; binary frames carry a channel
// byte (0 stdin, 1 stdout, 2 stderr); text frames are JSON control messages (resize, exit, error).
"use strict";
(() => {
  const box = document.getElementById("terminal");
  const status = document.getElementById("console-status");
  const term = new Terminal({cursorBlink: true, convertEol: false, fontSize: 14});
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  window.ovpsTerm = term;     // tests and the curious can read the screen buffer
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(proto + location.host + "/1.0/instances/" + box.dataset.ctid + "/exec");
  ws.binaryType = "arraybuffer";
  const enc = new TextEncoder();
  const send = (bytes) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    const frame = new Uint8Array(bytes.length + 1);
    frame[0] = 0;
    frame.set(bytes, 1);
    ws.send(frame);
  };
  ws.onopen = () => {
    ws.send(JSON.stringify({argv: [], tty: true, env: {TERM: "xterm-256color"}, cols: term.cols, rows: term.rows}));
    status.textContent = "● connected";
    status.classList.add("on");
    term.focus();
  };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      const msg = JSON.parse(e.data);
      if (msg.type === "exit") { status.textContent = "exited (" + msg.code + ")"; status.classList.remove("on"); }
      if (msg.type === "error") term.write("\r\n\x1b[31m" + msg.message + "\x1b[0m\r\n");
      return;
    }
    term.write(new Uint8Array(e.data).subarray(1));
  };
  ws.onclose = () => { status.textContent = "○ closed"; status.classList.remove("on"); };
  term.onData((d) => send(enc.encode(d)));
  term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
  term.onResize(({cols, rows}) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({type: "resize", cols, rows}));
  });
  window.addEventListener("resize", () => fit.fit());
})();
