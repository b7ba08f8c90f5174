// The dashboard's entry point: sign-in, and the view named by the URL hash
// (#/jobs, #/jobs/ID, #/pools, #/compare?a=ID&b=ID). Each view gets an AbortSignal that
// fires when the user leaves it, which stops its timers and live streams.

import { api, apiKey, signIn, signOut } from "./api.js";
import { compareView } from "./compare.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { poolsView } from "./pools.js";

const view = document.getElementById("view");
const signInSection = document.getElementById("sign-in");
const signOutButton = document.getElementById("sign-out");
let current = null;

function route() {
  current?.abort();
  current = new AbortController();
  view.replaceChildren();
  const signedIn = Boolean(apiKey());
  signInSection.hidden = signedIn;
  signOutButton.hidden = !signedIn;
  if (!signedIn) {
    document.getElementById("api-key").focus();
    return;
  }
  const [path, query] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "jobs";
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.getAttribute("href") === `#/${section}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  const signal = current.signal;
  if (section === "jobs" && parts[1]) jobView(view, signal, decodeURIComponent(parts[1]));
  else if (section === "pools") poolsView(view, signal);
  else if (section === "compare") compareView(view, signal, params);
  else jobsView(view, signal);
  document.title = `${view.querySelector("h1")?.textContent || "Dashboard"} · LCO fine-tuning`;
}

document.getElementById("sign-in-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("api-key");
  const message = document.getElementById("sign-in-error");
  signIn(input.value.trim());
  try {
    await api("/fine_tuning/jobs?limit=1"); // checks the key
    input.value = "";
    message.textContent = "";
    route();
    document.getElementById("main").focus();
  } catch (err) {
    signOut();
    message.textContent = err.status === 401 ? "That API key was not accepted." : `Sign-in failed: ${err.message}`;
  }
});

signOutButton.addEventListener("click", () => {
  signOut();
  route();
});

window.addEventListener("lco:unauthorized", () => {
  signOut();
  route();
});
window.addEventListener("hashchange", () => {
  route();
  document.getElementById("main").focus();
});
route();
