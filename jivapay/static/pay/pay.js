// The payer's page: live state (polls /pay/{id}/status with backoff, swaps the panel when the
// status changes or the time to pay runs out, stops when the order is closed), copy buttons, the
// countdown in local time (shown every second, announced once a minute) and "I have paid" with
// the optional receipt.
"use strict";
(function () {
  let main = document.getElementById("main");
  if (!main || !main.dataset.order) return;
  const orderId = main.dataset.order;
  const lang = main.dataset.lang;
  let status = main.dataset.status;
  let timeUp = main.dataset.timeUp === "true";
  let timer = null;
  let ticker = null;

  function announce(text) {
    const region = document.getElementById("announce");
    if (region) region.textContent = text;
  }

  function localTimes(root) {
    const fmt = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" });
    root.querySelectorAll("time.local-time").forEach(function (el) {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) el.textContent = fmt.format(when);
    });
  }

  function countdown(root) {
    if (ticker) clearInterval(ticker);
    const box = root.querySelector(".countdown");
    if (!box) return;
    const value = box.querySelector(".countdown-value");
    const deadline = new Date(box.dataset.deadline).getTime();
    let lastMinute = null;
    function tick() {
      const left = Math.max(0, Math.floor((deadline - Date.now()) / 1000));
      const mm = String(Math.floor(left / 60)).padStart(2, "0");
      const ss = String(left % 60).padStart(2, "0");
      value.textContent = box.dataset.label + ": " + mm + ":" + ss;
      box.classList.toggle("late", left < 120);
      const minute = Math.ceil(left / 60);
      if (left === 0) {
        announce(box.dataset.done);
        clearInterval(ticker);
        poll(0);
      } else if (minute !== lastMinute && left % 60 === 0 || lastMinute === null) {
        lastMinute = minute;
        announce(box.dataset.label + ": " + mm + ":" + ss);
      }
    }
    tick();
    ticker = setInterval(tick, 1000);
  }

  function copyButtons(root) {
    root.querySelectorAll("button.copy").forEach(function (button) {
      const label = button.textContent;
      button.addEventListener("click", async function () {
        try {
          await navigator.clipboard.writeText(button.dataset.copy);
          button.classList.add("done");
          button.textContent = "✓ " + label;
          announce("✓ " + label);
          setTimeout(function () { button.classList.remove("done"); button.textContent = label; }, 2500);
        } catch (e) {
          const range = document.createRange();
          range.selectNodeContents(document.getElementById(button.getAttribute("aria-describedby")));
          const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
        }
      });
    });
  }

  function confirmForm(root) {
    const form = root.querySelector("#confirm-form");
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const error = form.querySelector("#confirm-error");
      const input = form.querySelector("#receipt");
      const button = form.querySelector("#confirm");
      const data = new FormData();
      if (input.files[0]) data.append("receipt", input.files[0]);
      else if (input.required) { error.textContent = form.dataset.requiredMsg; input.focus(); return; }
      button.disabled = true; error.textContent = "";
      try {
        const r = await fetch(form.action, { method: "POST", body: data, credentials: "same-origin" });
        if (!r.ok) {
          let detail = form.dataset.errorMsg;
          try { const body = await r.json(); if (body.detail) detail = body.detail; } catch (e) {}
          error.textContent = detail; button.disabled = false; return;
        }
        poll(0);
      } catch (e) { error.textContent = form.dataset.errorMsg; button.disabled = false; }
    });
  }

  function autoReturn(root) {
    const box = root.querySelector(".return[data-return-url]");
    if (!box) return;
    const url = box.dataset.returnUrl;
    if (/^https?:\/\//i.test(url)) setTimeout(function () { window.location.assign(url); }, Number(box.dataset.seconds) * 1000);
  }

  function wire(root) { localTimes(root); countdown(root); copyButtons(root); confirmForm(root); autoReturn(root); }

  async function swap() {
    const r = await fetch(window.location.pathname + "?lang=" + encodeURIComponent(lang), { credentials: "same-origin" });
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const fresh = doc.getElementById("main");
    if (!fresh) return;
    main.replaceWith(fresh);
    main = fresh;
    status = main.dataset.status;
    timeUp = main.dataset.timeUp === "true";
    wire(main);
    const heading = main.querySelector("h1");
    if (heading) { heading.focus(); announce(heading.textContent); }
  }

  let delay = 1000;
  function poll(wait) {
    if (timer) clearTimeout(timer);
    timer = setTimeout(async function () {
      try {
        const r = await fetch("/pay/" + encodeURIComponent(orderId) + "/status", { cache: "no-store" });
        if (r.ok) {
          const body = await r.json();
          if (body.status !== status || body.time_up !== timeUp) { await swap(); delay = 1000; }
          else delay = Math.min(delay * 1.5, 10000);
          if (body.closed) return;
        } else delay = Math.min(delay * 2, 30000);
      } catch (e) { delay = Math.min(delay * 2, 30000); }
      poll(delay);
    }, wait);
  }

  wire(main);
  if (main.dataset.closed !== "true") poll(delay);
})();
