// The create form: POST /1.0/instances, follow the operation, then open the instance's page.
"use strict";
(() => {
  const {api, follow} = ovps;
  const form = document.getElementById("create");
  const box = document.getElementById("progress");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = (id) => document.getElementById(id).value.trim();
    const limits = {ram: v("f-ram"), swap: v("f-swap"), cpus: parseInt(v("f-cpus") || "0", 10)};
    if (v("f-disk") && v("f-disk") !== "0") limits.diskspace = v("f-disk");
    const body = {name: v("f-name"), template: v("f-template"), limits, start: document.getElementById("f-start").checked};
    if (v("f-net")) body.nets = [v("f-net")];
    if (v("f-ssh")) body.ssh_keys = v("f-ssh").split("\n").map((s) => s.trim()).filter(Boolean);
    const button = document.getElementById("f-submit");
    button.disabled = true;
    try {
      await follow(await api("POST", "/1.0/instances", body), box);
      location.href = "/ui/instances/" + encodeURIComponent(body.name);
    } catch (err) {
      box.hidden = false;
      box.classList.add("failed");
      box.querySelector(".msg").textContent = "error: " + err.message;
      button.disabled = false;
    }
  });
})();
